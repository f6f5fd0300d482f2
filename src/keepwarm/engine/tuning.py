"""The token budget of one model call, measured for each model on this machine.

Bigger model calls amortise what every call costs beyond the model (scheduling, thread
hand-offs, OpenVINO preparing kernels for a new shape): on MiniLM with 16 clients, a
budget of 2048 padded tokens served 92.6 texts/s and 512 only 74.7, although the bare
runtime was as fast at 512 (docs/benchmarks.md). But every text in a call waits for the
whole call, so a budget that suits a small model makes a large one answer in seconds.
The budget is therefore measured, not one constant for every model: at first load the
model is timed at budgets from 256 padded tokens up, on batches of about a typical
length (128 tokens, or its limit if shorter), each of a new shape as served batches
are, and gets the largest budget whose call takes at most a quarter of a second, among
those within 5 % of the best throughput seen (a runtime can slow down on large calls).
The result is recorded in the artifact store under the model files, runtime, dtype and
core count it was measured with, so later starts reuse it; `--max-batch-tokens`
overrides it for every model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.export import export_key
from keepwarm.runtimes.ort import available_cores

log = logging.getLogger(__name__)

CANDIDATE_BUDGETS = (256, 512, 1024, 2048, 4096, 8192)
TYPICAL_TOKENS = 128
NEAR_BEST = 0.95  # budgets slower than this share of the best throughput are not chosen
LONGEST_CALL_SECONDS = 0.25
_TIMED_CALLS = 3


def token_budget(
    spec: ModelSpec, fingerprint: str, runtime: Runtime, dtype: str, store: ArtifactStore, pad_id: int, max_rows: int
) -> int:
    """The padded-token budget per call for this model on this runtime, measured once and recorded."""
    key = f"{export_key(spec, fingerprint)}-batch-budget-{runtime.name}-{dtype}-{available_cores()}cores"

    def measure(_: Path) -> dict[str, Any]:
        return measure_token_budget(runtime, pad_id, spec.max_tokens, max_rows)

    _, record = store.get(key) or store.build(key, measure)
    return int(record["max_batch_tokens"])


def measure_token_budget(runtime: Runtime, pad_id: int, max_tokens: int, max_rows: int) -> dict[str, Any]:
    """Tokens/s and call time at growing budgets; the largest near-best budget with short enough calls wins."""
    length = min(TYPICAL_TOKENS, max_tokens)
    started = time.perf_counter()
    speeds: dict[int, float] = {}
    for budget in CANDIDATE_BUDGETS:
        rows = min(max_rows, max(1, budget // length))
        speed, seconds = _new_shape_calls(runtime, rows, length, pad_id)
        if seconds > LONGEST_CALL_SECONDS and speeds:
            break
        speeds[budget] = speed
        if rows == max_rows:
            break
    best = max(speeds.values())
    chosen = max(budget for budget, speed in speeds.items() if speed >= NEAR_BEST * best)
    log.info("batch budget for %s: %d padded tokens per call (tokens/s by budget: %s, measured in %.1fs)",
             runtime.spec.name, chosen, {b: round(s) for b, s in speeds.items()}, time.perf_counter() - started)
    return {
        "max_batch_tokens": chosen,
        "typical_tokens": length,
        "tokens_per_second": {str(budget): round(speed) for budget, speed in speeds.items()},
    }


def _new_shape_calls(runtime: Runtime, rows: int, length: int, pad_id: int) -> tuple[float, float]:
    """Tokens/s and seconds of the fastest of a few calls, each on a shape the runtime has not seen.

    Served batches rarely repeat a shape, and some runtimes (OpenVINO) prepare kernels
    for every new one, so a repeated shape would flatter small calls.
    """
    best_speed, best_seconds = 0.0, float("inf")
    for trim in range(_TIMED_CALLS):
        ids = np.full((rows, length - trim), pad_id, dtype=np.int64)
        began = time.perf_counter()
        runtime.embed(ids, np.ones_like(ids))
        seconds = time.perf_counter() - began
        best_speed, best_seconds = max(best_speed, ids.size / seconds), min(best_seconds, seconds)
    return best_speed, best_seconds
