"""How big a model call may be, measured for each model on this machine.

Two limits shape every model call (engine/scheduler.py), and both depend on the model
and the hardware, so neither is a constant tuned for MiniLM:

- The padded-token budget. Bigger calls amortise what every call costs beyond its
  tokens (scheduling, thread hand-offs, OpenVINO preparing kernels for a new shape):
  (docs/benchmarks.md has the figures). But every text in a call waits for the whole
  call, so a budget that suits a small model makes a large one answer in seconds. The
  model is timed at budgets from 256 padded tokens up, on calls of about a typical length
  (128 tokens, or its limit if shorter), each of a new shape as served calls are, and gets the
  largest budget whose call takes at most a quarter of a second (on the line fitted
  below, so one slow timing cannot flip the choice), among those within 10 % of the
  best throughput seen: a runtime can slow down on large calls, but differences under
  10 % are timing noise on a shared machine, and served calls favour the bigger call.
- The width rounding. OpenVINO prepares kernels for every new (rows, tokens) shape, and a
  server's calls rarely repeat one; widths rounded up to a multiple of 32 tokens repeat,
  so after a while a server's rounded calls find their shapes prepared, at the price of
  more padding. Which wins depends on the CPU, runtime and dtype (docs/benchmarks.md,
  "int8 shape policies" and "Where the engine's calls lose"), so one seeded sequence of
  server-like calls of varied rows and widths is timed both ways as a server meets
  them: at exact widths on shapes not seen before, and rounded on shapes already
  prepared once, each call both ways in turn. Rounding is kept only when it takes at
  most `ROUNDING_GAIN` of the exact widths' time. It applies to calls of several rows;
  a lone row keeps its own width (engine/worker.py). Runtimes with no cost for a new
  shape (ONNX Runtime, PyTorch: `Runtime.prepares_each_shape`) are not timed: they can
  only lose by padding, and the timing was half of their measurement at load.
- The padding allowance. Grouping texts of different lengths pads the shorter ones,
  and padding costs as much compute as real tokens; not grouping them costs another
  call. From the call times above (the faster of two sweeps) and those of a call of
  one row of 16 tokens, `seconds = per_call + per_token × padded tokens`, and a call
  may hold as many padding tokens as cost what one more call would:
  `per_call / per_token`. What one more call costs is measured as a server pays it: on a
  new shape where widths stay exact, on a prepared one where they are rounded (counting
  preparation there made the allowance several times too large, docs/benchmarks.md). A
  model whose calls cost little beyond their tokens (a large one) pads little; one with
  a large fixed cost (a small one) groups more freely.

The result is recorded in the artifact store under the model files, runtime, dtype and
core count it was measured with, so later starts reuse it. `--max-batch-tokens` and
`--max-batch-padding-tokens` (the CLI's names) override it for every model. The clock is a
parameter, so the choice can be tested with a model of a known cost on any machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.engine.scheduler import CallLimits, CallLimitSettings, call_width
from keepwarm.machine import available_cores
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.export import export_key

log = logging.getLogger(__name__)

CANDIDATE_BUDGETS = (256, 512, 1024, 2048, 4096, 8192)
TYPICAL_TOKENS = 128
NEAR_BEST = 0.9  # budgets slower than this share of the best throughput are not chosen
LONGEST_CALL_SECONDS = 0.25
SMALL_CALL_TOKENS = 16
_TIMED_CALLS = 3  # new shapes timed per size and sweep
_SWEEPS = 2
_MEASURED = ("max_call_tokens", "max_padding_tokens")
TOKEN_MULTIPLE = 32  # the rounding that was measured (docs/benchmarks.md, "int8 shape policies")
ROUNDING_GAIN = 0.95  # beyond the spread of this ratio between runs, each call timed both ways in turn
_ROUNDING_CALLS = 24  # server-like calls, each timed both ways
ROUNDING_WIDEST = 512  # tokens: the widest of those calls (4 × TYPICAL_TOKENS)

Clock = Callable[[], float]  # seconds, monotonic


def measured_limits(
    settings: CallLimitSettings,
    spec: ModelSpec,
    fingerprint: str,
    runtime: Runtime,
    dtype: str,
    store: ArtifactStore,
    pad_id: int,
) -> CallLimits:
    """The operator's `settings` with their open (None) fields filled in from this model's measurement."""
    given = asdict(settings)
    if all(given[field] is not None for field in _MEASURED):
        return CallLimits(**given, max_width=spec.max_tokens)
    # v3: rounding judged on prepared shapes, and the allowance with it; older records are measured again
    key = f"{export_key(spec, fingerprint)}-call-limits-v3-{runtime.name}-{dtype}-{available_cores()}cores"

    def measure(_: Path) -> dict[str, Any]:
        return measure_call_limits(runtime, pad_id, spec.max_tokens, settings.max_call_rows)

    _, record = store.get(key) or store.build(key, measure)
    measured = {field: int(record[field]) for field in _MEASURED if given[field] is None}
    multiple = int(record["token_multiple"])
    return CallLimits(**(given | measured), token_multiple=multiple, max_width=spec.max_tokens)


def measure_call_limits(
    runtime: Runtime, pad_id: int, max_tokens: int, max_rows: int, *, clock: Clock = time.perf_counter
) -> dict[str, Any]:
    """Time calls of growing size; choose the token budget and padding allowance from those times."""
    length = min(TYPICAL_TOKENS, max_tokens)
    started = clock()
    shapes = [(1, min(SMALL_CALL_TOKENS, length))]  # almost no tokens: what a call costs beyond them
    calls = [_new_shape_calls(runtime, *shapes[0], pad_id, sweep=0, clock=clock)]
    for budget in CANDIDATE_BUDGETS:
        shapes.append((min(max_rows, max(1, budget // length)), length))
        calls.append(_new_shape_calls(runtime, *shapes[-1], pad_id, sweep=0, clock=clock))
        if calls[-1][1] > LONGEST_CALL_SECONDS or shapes[-1][0] == max_rows:
            break
    for sweep in range(1, _SWEEPS):  # apart in time, so a slow moment of a shared machine is outvoted
        again = [_new_shape_calls(runtime, *shape, pad_id, sweep=sweep, clock=clock) for shape in shapes]
        calls = [min(a, b, key=lambda call: call[1] / call[0]) for a, b in zip(calls, again, strict=True)]
    speeds = {
        budget: tokens / seconds
        for budget, (tokens, seconds) in zip(CANDIDATE_BUDGETS, calls[1:], strict=False)
    }
    per_call, per_token = _call_cost(calls)
    # judged on the fitted line, not one timing: a call measured a little slow must not flip the choice
    short = {b: speed for b, speed in speeds.items() if per_call + per_token * b <= LONGEST_CALL_SECONDS}
    short = short or {min(speeds): speeds[min(speeds)]}
    budget = max(b for b, speed in short.items() if speed >= NEAR_BEST * max(short.values()))
    multiple, rounding = _token_multiple(runtime, pad_id, max_tokens, budget, max_rows, clock)
    if multiple > 1:  # a server's rounded calls repeat their shapes: one more call prepares none
        per_call = _prepared_call_cost(runtime, *shapes[0], per_token, pad_id, clock)
    padding = int(min(budget, per_call / per_token))
    log.info(
        "model calls for %s: %d padded tokens per call, up to %d of them padding, widths rounded to %d "
        "(%.1f ms per call + %.3f ms per token; tokens/s by budget: %s; measured in %.1fs)",
        runtime.spec.name,
        budget,
        padding,
        multiple,
        per_call * 1e3,
        per_token * 1e3,
        {b: round(s) for b, s in speeds.items()},
        clock() - started,
    )
    return {
        "max_call_tokens": budget,
        "max_padding_tokens": padding,
        "typical_tokens": length,
        "seconds_per_call": per_call,
        "seconds_per_token": per_token,
        "tokens_per_second": {str(b): round(speed) for b, speed in speeds.items()},
        "token_multiple": multiple,
        "rounding_seconds": rounding,
    }


def _token_multiple(
    runtime: Runtime, pad_id: int, max_tokens: int, budget: int, max_rows: int, clock: Clock
) -> tuple[int, dict[str, float]]:
    """TOKEN_MULTIPLE when calls rounded up to it beat the same calls at their exact widths, else 1.

    Both time the same seeded calls as a server running a while meets them: rounded on
    shapes prepared by one untimed pass (a server's rounded shapes repeat), exact on
    shapes not seen before (its exact ones rarely do). Each call is timed exact and then
    rounded, one after the other, so a slow moment of a shared machine falls on both.
    """
    if max_tokens <= TOKEN_MULTIPLE or not runtime.prepares_each_shape:
        return 1, {}  # nothing to gain: no width to round, or no cost for a new shape to save
    calls = _rounding_calls(max_tokens, budget, max_rows)
    rounded = [(rows, call_width(width, TOKEN_MULTIPLE, max_tokens)) for rows, width in calls]
    _time_calls(runtime, rounded, pad_id, clock)  # prepares the rounded shapes
    seconds = {"exact": 0.0, "rounded": 0.0}
    for exact_call, rounded_call in zip(calls, rounded, strict=True):
        seconds["exact"] += _time_calls(runtime, [exact_call], pad_id, clock)
        seconds["rounded"] += _time_calls(runtime, [rounded_call], pad_id, clock)
    multiple = TOKEN_MULTIPLE if seconds["rounded"] <= ROUNDING_GAIN * seconds["exact"] else 1
    return multiple, seconds


def _time_calls(runtime: Runtime, calls: list[tuple[int, int]], pad_id: int, clock: Clock) -> float:
    """Seconds the runtime spends on calls of these (rows, width) shapes, one after another."""
    began = clock()
    for rows, width in calls:
        ids = np.full((rows, width), pad_id, dtype=np.int64)
        runtime.embed(ids, np.ones_like(ids))
    return clock() - began


def _rounding_calls(max_tokens: int, budget: int, max_rows: int) -> list[tuple[int, int]]:
    """(rows, width) of server-like calls: as wide as the longest of their rows, within the budget.

    A call holds from two rows (a light load) to as many as the budget holds at the widest
    (a heavy one), and is padded to its longest row: the more rows, the nearer its width
    is to the longest texts, and the less rounding adds to it (padding a width drawn
    alone overstated that cost several-fold, docs/benchmarks.md). Widths are never
    already multiples (rounding would not change them) and stop at `ROUNDING_WIDEST` and
    at the budget (one of CANDIDATE_BUDGETS, all wider than TOKEN_MULTIPLE): past the
    first a call's compute, growing with the width squared through attention, dwarfs
    preparing its shape, so rounding has little to gain there; and for a long-context
    model (8K tokens) calls up to its limit made this measurement take longer than
    everything else at load put together.
    """
    rng = np.random.default_rng(0)
    calls = []
    widest = min(max_tokens, ROUNDING_WIDEST, budget)
    most = min(max_rows, max(1, budget // widest))
    for _ in range(_ROUNDING_CALLS):
        rows = int(rng.integers(min(2, most), most + 1))  # a lone row is never rounded (engine/worker.py)
        width = int(rng.integers(TOKEN_MULTIPLE + 1, widest + 1, size=rows).max())
        width -= 1 if width % TOKEN_MULTIPLE == 0 else 0
        calls.append((rows, width))
    return calls


def _call_cost(calls: list[tuple[int, float]]) -> tuple[float, float]:
    """Seconds per call beyond its tokens, and seconds per token, from (tokens, seconds) of calls.

    The cost per token is the median slope between every two calls (Theil-Sen), so one
    slow call cannot tilt it; the cost per call is the smallest call's time less its
    few tokens, measured rather than extrapolated from large calls.
    """
    points = sorted(calls)
    slopes = [
        (t2 - t1) / (n2 - n1) for i, (n1, t1) in enumerate(points) for n2, t2 in points[i + 1 :] if n2 > n1
    ]
    fastest = min(t / n for n, t in points)
    per_token = max(float(np.median(slopes)), fastest / 100) if slopes else fastest  # tokens are never free
    smallest_tokens, smallest_seconds = points[0]
    return max(0.0, smallest_seconds - per_token * smallest_tokens), per_token


def _prepared_call_cost(
    runtime: Runtime, rows: int, width: int, per_token: float, pad_id: int, clock: Clock
) -> float:
    """Seconds a call of this shape costs beyond its tokens once prepared: the fastest of a few, after one."""
    _time_calls(runtime, [(rows, width)], pad_id, clock)
    seconds = min(_time_calls(runtime, [(rows, width)], pad_id, clock) for _ in range(_TIMED_CALLS))
    return max(0.0, seconds - per_token * rows * width)


def _new_shape_calls(
    runtime: Runtime, rows: int, length: int, pad_id: int, *, sweep: int, clock: Clock
) -> tuple[int, float]:
    """Tokens and seconds of the fastest of a few calls, each on a shape the runtime has not seen.

    Served calls rarely repeat a shape, and some runtimes (OpenVINO) prepare kernels
    for every new one, so a repeated shape would flatter small calls. Each sweep trims
    the rows by a few more tokens for shapes of its own.
    """
    fastest = (0, float("inf"))
    for trim in range(sweep * _TIMED_CALLS, (sweep + 1) * _TIMED_CALLS):
        width = max(1, length - trim)
        seconds = _time_calls(runtime, [(rows, width)], pad_id, clock)
        if rows * width / seconds > fastest[0] / fastest[1]:
            fastest = (rows * width, seconds)
    return fastest
