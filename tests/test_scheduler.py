"""The scheduling policy (which queued inputs share a model call), exercised directly on the scheduler."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from keepwarm.engine.scheduler import CallLimits, Scheduler
from keepwarm.engine.work import BACKGROUND, ONLINE, Job, WorkItem
from keepwarm.errors import NotReady, Overloaded


def _limits(tokens: int, rows: int, queue: int = 10_000, padding: int = 100, multiple: int = 1) -> CallLimits:
    """Limits as a loaded model's scheduler gets them (budget and padding allowance filled in)."""
    return CallLimits(
        max_call_tokens=tokens,
        max_call_rows=rows,
        max_queue_tokens=queue,
        max_padding_tokens=padding,
        token_multiple=multiple,
    )


def _items(lengths: list[int], priority: int = ONLINE) -> list[WorkItem]:
    job = Job(len(lengths), 4, priority=priority)
    return [WorkItem(ids=np.ones(n, dtype=np.int64), job=job, index=i) for i, n in enumerate(lengths)]


def _lengths(call: list[WorkItem]) -> list[int]:
    return sorted(item.length for item in call)


def test_a_call_respects_the_padded_token_budget() -> None:
    scheduler = Scheduler(_limits(100, 64))
    scheduler.submit(_items([10] * 30))
    call = scheduler.next_call()
    assert len(call) == 10  # 10 rows x 10 tokens = the whole budget


def test_a_call_respects_the_row_cap() -> None:
    scheduler = Scheduler(_limits(10_000, 8))
    scheduler.submit(_items([3] * 20))
    assert len(scheduler.next_call()) == 8


def test_similar_lengths_are_grouped_around_the_oldest_input() -> None:
    scheduler = Scheduler(_limits(4 * 51, 4))
    scheduler.submit(_items([50]))  # oldest
    scheduler.submit(_items([5, 200, 48, 6, 49, 51, 300]))
    first = scheduler.next_call()
    assert _lengths(first) == [48, 49, 50, 51]
    assert _lengths(scheduler.next_call()) == [5, 6]  # then the oldest remaining (5) and its neighbour


def test_a_call_stops_growing_before_padding_passes_its_allowance() -> None:
    scheduler = Scheduler(_limits(10_000, 64, padding=20))
    scheduler.submit(_items([100, 96, 92, 60, 20]))
    assert _lengths(scheduler.next_call()) == [92, 96, 100]  # adding 60 would pad 52 tokens
    assert _lengths(scheduler.next_call()) == [60]
    assert _lengths(scheduler.next_call()) == [20]


def test_rows_of_one_rounded_width_share_a_call_whatever_their_exact_lengths() -> None:
    # calls padded to a multiple of 32: lengths 33-64 all run at width 64, so padding
    # among them costs nothing a call of their own would not; a row of 20 would pay
    # 32 tokens more here than at its own width of 32, past the allowance
    scheduler = Scheduler(_limits(10_000, 64, padding=10, multiple=32))
    scheduler.submit(_items([33, 40, 50, 64, 20, 60]))
    assert _lengths(scheduler.next_call()) == [33, 40, 50, 60, 64]
    assert _lengths(scheduler.next_call()) == [20]


def test_the_budget_counts_a_call_at_its_rounded_width() -> None:
    scheduler = Scheduler(_limits(128, 64, multiple=32))
    scheduler.submit(_items([33] * 3))
    assert len(scheduler.next_call()) == 2  # 2 rows at width 64 fill the budget; by exact lengths 3 would fit


def test_the_budget_counts_a_rounded_call_no_wider_than_the_model_allows() -> None:
    # a 510-token model: rows of 500 are padded to 510, not 512, so two fit a budget of 1,020
    limits = dataclasses.replace(_limits(1020, 64, multiple=32), max_width=510)
    scheduler = Scheduler(limits)
    scheduler.submit(_items([500, 500]))
    assert len(scheduler.next_call()) == 2
    assert dataclasses.replace(limits, max_width=None).width(500) == 512


def test_short_inputs_of_different_lengths_share_a_call() -> None:
    # 7 padding tokens are 29 % of this call, but cost less than a second call would
    scheduler = Scheduler(_limits(10_000, 64, padding=20))
    scheduler.submit(_items([5, 12]))
    assert _lengths(scheduler.next_call()) == [5, 12]


def test_an_input_over_the_budget_still_runs_alone() -> None:
    scheduler = Scheduler(_limits(64, 8))
    scheduler.submit(_items([500, 1]))
    assert _lengths(scheduler.next_call()) == [500]
    assert _lengths(scheduler.next_call()) == [1]


def test_online_work_runs_before_background_work() -> None:
    scheduler = Scheduler(_limits(1000, 2))
    background = _items([5, 5, 5, 5], priority=BACKGROUND)
    scheduler.submit(background)
    online = _items([5, 5], priority=ONLINE)
    scheduler.submit(online)
    assert {id(i) for i in scheduler.next_call()} == {id(i) for i in online}
    assert all(item.job.priority == BACKGROUND for item in scheduler.next_call())


def test_full_queue_refuses_a_whole_request() -> None:
    scheduler = Scheduler(_limits(1000, 8, queue=100))
    scheduler.submit(_items([60]))
    with pytest.raises(Overloaded) as caught:
        scheduler.submit(_items([30, 30]))
    assert caught.value.retry_after >= 1
    assert scheduler.queued_tokens == 60


def test_one_large_request_is_admitted_into_an_empty_queue() -> None:
    scheduler = Scheduler(_limits(1000, 8, queue=100))
    scheduler.submit(_items([80, 80]))
    assert scheduler.queued_tokens == 160


def test_cancelled_jobs_never_reach_a_model_call() -> None:
    dropped: list[int] = []
    scheduler = Scheduler(_limits(1000, 64), on_dropped=dropped.append)
    abandoned, kept = _items([5, 6, 7]), _items([5, 6])
    scheduler.submit(abandoned)
    scheduler.submit(kept)
    abandoned[0].job.future.cancel()
    scheduler.discard_finished()
    call = scheduler.next_call()
    assert all(item.job is kept[0].job for item in call) and len(call) == 2
    assert sum(dropped) == 3 and scheduler.queued_tokens == 0


def test_close_wakes_the_worker_and_returns_leftovers() -> None:
    scheduler = Scheduler(_limits(1024, 64))
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(scheduler.next_call()))
    waiter.start()
    assert scheduler.close() == []
    waiter.join(timeout=5)
    assert results == [None]
    with pytest.raises(NotReady):
        scheduler.submit(_items([1]))
