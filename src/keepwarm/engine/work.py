"""The engine's units of work: a job is one caller's request, a work item one of its inputs.

The worker thread writes each finished vector straight into the job's output array
and completes the job's future once the last one lands. A `concurrent.futures.Future`
serves both kinds of caller: threads wait on it, and asyncio wraps it, so cancelling
an awaiting request (a client that hung up) cancels the job too.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DENSE_ONLY = frozenset({"dense"})  # what most requests want: pooled vectors
ONLINE = 0  # interactive requests: always served first
BACKGROUND = 1  # Batch API jobs and re-embedding: use the capacity online traffic leaves

_sequence = itertools.count()


class Job:
    """Collects the vectors of one request, in input order, and when its work happened.

    Times are `time.perf_counter()` readings: `submitted` when queued, `started` when the
    first of its inputs went into a model call, `completed` when the last vector landed.
    `compute_seconds` is this job's share of the model calls it took part in (each call's
    time split across its inputs by their tokens), what per-hour pricing charges for.
    """

    def __init__(
        self,
        count: int,
        dimensions: int,
        *,
        priority: int = ONLINE,
        queue_timeout: float | None = None,
        outputs: frozenset[str] = DENSE_ONLY,
        normalized: bool = True,
    ) -> None:
        self.future: Future[np.ndarray] = Future()
        self.outputs = outputs  # what each input needs from its model call (outputs/heads.py)
        self.normalized = normalized  # False: dense rows before the model's Normalize module
        self.vectors = np.empty((count, dimensions if "dense" in outputs else 0), dtype=np.float32)
        # sparse and multi-vector outputs, per input, when asked for (RowOutputs)
        self.extras: list[Any] | None = None if outputs == DENSE_ONLY else [None] * count
        self.remaining = count
        self.priority = priority
        self.queue_timeout = queue_timeout
        self.submitted = time.perf_counter()
        self.started: float | None = None
        self.completed: float | None = None
        self.compute_seconds = 0.0

    def mark_started(self, now: float) -> None:
        """Note that a model call with one of this job's inputs begins (worker thread only)."""
        if self.started is None:
            self.started = now

    def overdue(self, now: float) -> bool:
        """True if the job has waited longer than its queue timeout without any work started."""
        return (
            self.started is None
            and self.queue_timeout is not None
            and now - self.submitted > self.queue_timeout
        )

    @property
    def finished(self) -> bool:
        """True once the job succeeded, failed or was cancelled: its items need no work."""
        return self.future.done()

    def deliver(
        self, index: int, vector: np.ndarray | None, compute_seconds: float = 0.0, extras: Any = None
    ) -> None:
        """Store one input's vector (and other outputs) and its share of model time (worker thread only)."""
        if self.finished:
            return
        if vector is not None and self.vectors.shape[1]:
            self.vectors[index] = vector
        if self.extras is not None:
            self.extras[index] = extras
        self.compute_seconds += compute_seconds
        self.remaining -= 1
        if self.remaining == 0:
            self.completed = time.perf_counter()
            self._settle(lambda: self.future.set_result(self.vectors))

    def fail(self, error: BaseException) -> None:
        """Fail the whole job; the caller sees `error`."""
        self._settle(lambda: self.future.set_exception(error))

    def _settle(self, action: Callable[[], None]) -> None:
        with contextlib.suppress(InvalidStateError):  # cancelled by the caller in the meantime
            action()


@dataclass(eq=False, slots=True)
class WorkItem:
    """One input's token ids (for pairs, segment ids; for ColBERT, its masks) waiting for the model."""

    ids: np.ndarray
    job: Job
    index: int
    sequence: int = field(default_factory=lambda: next(_sequence))
    queued: bool = True
    type_ids: np.ndarray | None = None
    attention: np.ndarray | None = None  # None: every token is attended to
    keep: np.ndarray | None = (
        None  # which token vectors the multi-vector output answers (None: the head's rule)
    )

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def sort_key(self) -> tuple[int, int]:
        return (len(self.ids), self.sequence)
