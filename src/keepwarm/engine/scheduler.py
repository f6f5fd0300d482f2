"""The scheduling policy: which queued inputs run together in the next model call.

Policy, in order of importance:
1. Priority: online requests before background work.
2. Fairness: every model call contains the oldest waiting input of that priority.
3. Efficiency: the rest of the call is filled with inputs of the closest lengths, up to
   a budget of padded tokens (rows × the call's width), a cap on rows, and an allowance of
   padding tokens. A fixed row count would waste time on long texts and leave throughput
   unused on short ones. Padding costs as much compute as real tokens: filling the
   budget with whatever is queued pads a large share of every call under load, and
   grouping only equal lengths makes many more calls; both were measured to cost
   throughput (docs/benchmarks.md). So a call may hold as much padding as costs what
   another model call would. The budget and the allowance are measured for each model
   at its first load (engine/tuning.py). Where the model's calls are padded to a
   multiple of some width (`token_multiple`), the call is counted at that width, and
   the allowance is charged only the padding a row pays beyond its own rounded width:
   that much it pays in any call, so rows of one rounded width share a call freely.

Deadlines: an online job that waited longer than its queue timeout before any of its
inputs reached the model is failed (DeadlineExceeded) when it comes up, not computed
for a caller that has likely given up; its inputs are dropped.

There is no waiting to fill a call: when the model is free, whatever is queued runs.
Inputs that arrive meanwhile form the next call, so calls grow with load by
themselves. The queue is bounded in tokens: when full, submissions are refused with a
retry hint derived from the measured throughput.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from keepwarm.engine.work import WorkItem
from keepwarm.errors import DeadlineExceeded, NotReady, Overloaded

_HELD_POLL_SECONDS = 0.01


@dataclass(frozen=True)
class CallLimitSettings:
    """The operator's limits on model calls; None asks for the model's measured value (engine/tuning.py)."""

    max_call_tokens: int | None = None  # padded tokens per call
    max_call_rows: int = 64
    max_queue_tokens: int = 600_000
    max_padding_tokens: int | None = None


@dataclass(frozen=True)
class CallLimits:
    """How big one model call and the waiting queue may get, for one model: every value decided."""

    max_call_tokens: int  # padded tokens per call
    max_call_rows: int
    max_queue_tokens: int
    max_padding_tokens: int
    token_multiple: int = 1  # a call's width is padded up to a multiple of this (engine/tuning.py)
    max_width: int | None = None  # the model's longest input: no call is padded past it

    def width(self, longest: int) -> int:
        """The width a call whose longest row has `longest` tokens is padded to."""
        return call_width(longest, self.token_multiple, self.max_width)


class _Lane:
    """Queued items of one priority: by arrival (for fairness) and by length (for grouping)."""

    def __init__(self) -> None:
        self.arrivals: deque[WorkItem] = deque()
        self.by_length: list[tuple[int, int]] = []
        self.items: dict[tuple[int, int], WorkItem] = {}

    def add(self, item: WorkItem) -> None:
        self.arrivals.append(item)
        bisect.insort(self.by_length, item.sort_key)
        self.items[item.sort_key] = item

    def oldest(self) -> WorkItem | None:
        while self.arrivals and not self.arrivals[0].queued:
            self.arrivals.popleft()
        return self.arrivals[0] if self.arrivals else None

    def take(self, start: int, stop: int) -> list[WorkItem]:
        keys = self.by_length[start:stop]
        del self.by_length[start:stop]
        taken = [self.items.pop(key) for key in keys]
        for item in taken:
            item.queued = False
        return taken


def _window(keys: list[tuple[int, int]], anchor: int, limits: CallLimits) -> tuple[int, int]:
    """Grow [start, stop) around `anchor` towards the closest lengths while the call still fits."""
    start, stop = anchor, anchor + 1
    anchor_length = longest = keys[anchor][0]
    own = limits.width(longest)  # the rows' own widths, summed
    while stop - start < limits.max_call_rows:
        rows = stop - start + 1
        left_own = own + limits.width(keys[start - 1][0]) if start > 0 else own
        left_fits = start > 0 and _fits(left_own, longest, rows, limits)
        right_longest = max(longest, keys[stop][0]) if stop < len(keys) else longest
        right_own = own + limits.width(keys[stop][0]) if stop < len(keys) else own
        right_fits = stop < len(keys) and _fits(right_own, right_longest, rows, limits)
        if left_fits and right_fits:
            go_left = anchor_length - keys[start - 1][0] <= keys[stop][0] - anchor_length
        elif left_fits or right_fits:
            go_left = left_fits
        else:
            break
        if go_left:
            start -= 1
            own = left_own
        else:
            longest = right_longest
            own = right_own
            stop += 1
    return start, stop


def _fits(own: int, longest: int, rows: int, limits: CallLimits) -> bool:
    """Within the padded-token budget, with padding (compute spent on nothing) within its allowance.

    `own` is the sum of the rows' own widths: padding up to those is not a cost of grouping.
    """
    padded = limits.width(longest) * rows
    return padded <= limits.max_call_tokens and padded - own <= limits.max_padding_tokens


def call_width(longest: int, multiple: int, max_width: int | None = None) -> int:
    """`longest` rounded up to `multiple`, never past `max_width` (the model has no position beyond it)."""
    width = -(-longest // multiple) * multiple
    return width if max_width is None else max(longest, min(max_width, width))


class Scheduler:
    """A thread-safe queue of work items that hands out model calls by the policy above."""

    def __init__(self, limits: CallLimits, on_dropped: Callable[[int], None] | None = None) -> None:
        self.limits = limits
        self._on_dropped = on_dropped
        self._lanes: dict[int, _Lane] = {}
        self._condition = threading.Condition()
        self._queued_tokens = 0
        self._closed = False
        self._tokens_per_second = 0.0

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def tokens_per_second(self) -> float:
        """Recent model throughput (moving average over model calls)."""
        return self._tokens_per_second

    def submit(self, items: list[WorkItem]) -> None:
        """Queue all of one request's items, or none of them (Overloaded/NotReady)."""
        tokens = sum(item.length for item in items)
        with self._condition:
            if self._closed:
                raise NotReady("the server is shutting down", retry_after=1)
            if self._queued_tokens and self._queued_tokens + tokens > self.limits.max_queue_tokens:
                raise Overloaded(
                    "The server is overloaded: this model's queue is full "
                    f"({self._queued_tokens} tokens waiting). Retry after the indicated delay.",
                    retry_after=self._drain_seconds(),
                )
            for item in items:
                self._lanes.setdefault(item.job.priority, _Lane()).add(item)
            self._queued_tokens += tokens
            self._condition.notify_all()  # workers may serve different priorities

    def next_call(
        self, priorities: tuple[int, ...] | None = None, *, held: Callable[[], bool] | None = None
    ) -> list[WorkItem] | None:
        """Block until a model call's inputs of `priorities` (default: any) are queued; None once closed.

        While `held()` is true nothing is taken: work stays queued, visible and subject to
        its deadline, as if the model were busy (the worker's test hook; polled).
        """
        with self._condition:
            while True:
                if held is None or not held():
                    call = self._select(priorities)
                    if call:
                        return call
                if self._closed:
                    return None
                self._condition.wait(_HELD_POLL_SECONDS if held else None)

    def discard_finished(self) -> None:
        """Drop queued items whose job is already over (cancelled by a departed client)."""
        with self._condition:
            for lane in self._lanes.values():
                dead = [key for key, item in lane.items.items() if item.job.finished]
                for key in dead:
                    lane.items.pop(key).queued = False
                    self._queued_tokens -= key[0]
                if dead:
                    lane.by_length = sorted(lane.items)
                    self._dropped(len(dead))

    def record_throughput(self, tokens: int, seconds: float) -> None:
        """Feed the measured speed into the Retry-After estimate (moving average)."""
        if seconds > 0:
            rate = tokens / seconds
            self._tokens_per_second = (
                rate if not self._tokens_per_second else (0.8 * self._tokens_per_second + 0.2 * rate)
            )

    def close(self) -> list[WorkItem]:
        """Refuse new work; return what was still queued so it can be failed."""
        with self._condition:
            self._closed = True
            leftovers = [item for lane in self._lanes.values() for item in lane.take(0, len(lane.by_length))]
            self._queued_tokens = 0
            self._condition.notify_all()
            return leftovers

    def _drain_seconds(self) -> int:
        rate = self._tokens_per_second or 1000.0
        return max(1, math.ceil(self._queued_tokens / rate))

    def _select(self, priorities: tuple[int, ...] | None) -> list[WorkItem]:
        for priority in sorted(self._lanes):
            if priorities is not None and priority not in priorities:
                continue
            lane = self._lanes[priority]
            while (anchor := lane.oldest()) is not None:
                position = bisect.bisect_left(lane.by_length, anchor.sort_key)
                start, stop = _window(lane.by_length, position, self.limits)
                call = lane.take(start, stop)
                self._queued_tokens -= sum(item.length for item in call)
                self._expire_overdue(call)
                live = [item for item in call if not item.job.finished]
                self._dropped(len(call) - len(live))
                if live:
                    return live
        return []

    def _expire_overdue(self, call: list[WorkItem]) -> None:
        """Fail jobs that waited past their deadline: nobody should pay for late work."""
        now = time.perf_counter()
        for item in call:
            if item.job.overdue(now):
                waited = now - item.job.submitted
                item.job.fail(DeadlineExceeded(waited, item.job.queue_timeout or 0, self._drain_seconds()))

    def _dropped(self, count: int) -> None:
        if count and self._on_dropped:
            self._on_dropped(count)
