"""The thread that feeds one model: takes model calls from the scheduler and runs them.

Inference runs here, off the event loop. Tokenization happens earlier, on other
threads, when requests arrive, so the next call's inputs are tokenized while this one runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from keepwarm.engine.scheduler import Scheduler
from keepwarm.engine.work import DENSE_ONLY, WorkItem
from keepwarm.errors import NotReady
from keepwarm.runtimes.base import Runtime

log = logging.getLogger(__name__)

CallObserver = Callable[
    [int, int, int, float, int], None
]  # (rows, tokens, padded tokens, seconds, failed calls)

# Test hook: while the file this names exists, workers start no model call, so a test can
# hold work in the queue for as long as it needs instead of racing a model's speed. When
# the file has lines, they name the models held; the others keep running.
HOLD_FILE_ENV = "KEEPWARM_HOLD_FILE"


def _hold_check(name: str) -> Callable[[], bool] | None:
    path = os.environ.get(HOLD_FILE_ENV)
    if not path:
        return None
    hold = Path(path)

    def held() -> bool:
        try:
            names = hold.read_text().split()
        except FileNotFoundError:
            return False
        return not names or name in names

    return held


def pad_rows(
    rows: list[np.ndarray], pad_id: int, masks: list[np.ndarray | None] | None = None, *, width: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token-id rows to the longest one, or to `width` if wider; return input_ids and mask.

    A row's mask is ones over its tokens, or its entry of `masks` where that is given
    (ColBERT's unattended expansion tokens, engine/colbert.py).
    """
    longest = max(width, *(len(ids) for ids in rows))
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), longest), dtype=np.int64)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = ids
        mask = None if masks is None else masks[row]
        attention_mask[row, : len(ids)] = 1 if mask is None else mask
    return input_ids, attention_mask


def model_inputs(
    ids: list[np.ndarray],
    type_ids: list[np.ndarray] | None,
    pad_id: int,
    masks: list[np.ndarray | None] | None = None,
    *,
    width: int = 0,
) -> tuple[np.ndarray, ...]:
    """One call's padded input_ids and attention_mask, and the segment ids of pairs (zero-padded)."""
    input_ids, attention_mask = pad_rows(ids, pad_id, masks, width=width)
    if type_ids is None:
        return input_ids, attention_mask
    return input_ids, attention_mask, pad_rows(type_ids, 0, width=width)[0]


def kept_tokens(items: list[WorkItem], width: int) -> np.ndarray | None:
    """[rows, width]: the token vectors each input answers where its tokenizer chose them; never padding."""
    if all(item.keep is None for item in items):
        return None
    keep = np.zeros((len(items), width), dtype=bool)
    for row, item in enumerate(items):
        keep[row, : item.length] = True if item.keep is None else item.keep
    return keep


class ModelWorker:
    """Runs model calls for one model on a dedicated thread until the scheduler closes."""

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        scheduler: Scheduler,
        pad_id: int,
        observe: CallObserver | None = None,
        *,
        priorities: tuple[int, ...] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.scheduler = scheduler
        self.pad_id = pad_id
        self.priorities = priorities  # which priorities this worker serves (None: all)
        self._observe = observe
        self._on_start = on_start
        self._held = _hold_check(name)
        self._thread = threading.Thread(target=self._loop, name=f"keepwarm-model-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        if self._on_start:
            self._on_start()
        while (call := self.scheduler.next_call(self.priorities, held=self._held)) is not None:
            started = time.perf_counter()
            for item in call:
                item.job.mark_started(started)
            failures = self._run(call)
            elapsed = time.perf_counter() - started
            tokens = sum(item.length for item in call)
            self.scheduler.record_throughput(tokens, elapsed)
            if self._observe:
                self._observe(len(call), tokens, len(call) * self._width(call), elapsed, failures)

    def _width(self, items: list[WorkItem]) -> int:
        """The width this call's rows are padded to: the longest, rounded as measured for the model.

        A lone row keeps its own width: lone rows are what an idle server runs, their shapes
        are one per length, and the few lengths of recent requests stay in the runtime's
        kernel cache, so rounding them would mostly add padding (docs/benchmarks.md,
        "Where the engine's calls lose").
        """
        longest = max(item.length for item in items)
        return longest if len(items) == 1 else self.scheduler.limits.width(longest)

    def _run(self, items: list[WorkItem]) -> int:
        """Embed and deliver; on a runtime error, retry in halves to isolate the culprit.

        Returns how many model calls failed (0 when the call simply worked).
        """
        unnormalized = [item for item in items if not item.job.normalized]
        if unnormalized and len(unnormalized) < len(items):  # one call answers one kind of dense row
            return self._run([item for item in items if item.job.normalized]) + self._run(unnormalized)
        started = time.perf_counter()
        wanted = frozenset().union(*(item.job.outputs for item in items))
        try:
            types = None if items[0].type_ids is None else [item.type_ids for item in items]
            masks = [item.attention for item in items]
            ids = [item.ids for item in items]
            inputs = model_inputs(ids, types, self.pad_id, masks, width=self._width(items))
            if wanted == DENSE_ONLY:
                vectors = (
                    self.runtime.embed(*inputs, normalize=False)
                    if unnormalized
                    else self.runtime.embed(*inputs)
                )
                produced = [None] * len(items)
            else:  # one call for every output any of these inputs asked for (outputs/heads.py)
                produced = self.runtime.produce(*inputs[:2], wanted, kept_tokens(items, inputs[0].shape[1]))
                vectors = [row.dense for row in produced]
        except Exception as exc:  # noqa: BLE001 - any runtime fault must stay inside this call
            if len(items) > 1:
                log.warning(
                    "a model call of %d inputs failed (%s); retrying it in halves",
                    len(items),
                    type(exc).__name__,
                )
                middle = len(items) // 2
                return 1 + self._run(items[:middle]) + self._run(items[middle:])
            log.exception("inference failed for one input of %d tokens", items[0].length)
            items[0].job.fail(
                NotReady("inference failed for one of this request's inputs; retry", retry_after=1)
            )
            return 1
        seconds_per_token = (time.perf_counter() - started) / sum(item.length for item in items)
        for item, vector, extras in zip(items, vectors, produced, strict=True):
            item.job.deliver(item.index, vector, seconds_per_token * item.length, extras)
        return 0
