"""Per-model call limits (token budget, padding allowance): measured at first load, recorded, reused,
overridable.

The choice is tested on a model of a known cost with a clock that only it advances, so the
verdict is the same on any machine, however busy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import MODEL

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.engine import CallLimitSettings, Engine, EngineSettings
from keepwarm.engine.tuning import CANDIDATE_BUDGETS, measure_call_limits
from keepwarm.runtimes.base import Runtime


class _Clock:
    """Seconds that pass only when the model below says its work took them."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _TimedModel(Runtime):
    """Stands in for a model of a known cost: a fixed cost per call plus a cost per token."""

    name = "timed"

    def __init__(self, per_call: float, per_token: float, clock: _Clock) -> None:
        super().__init__(DEFAULT_ENTRY.to_spec())
        self.per_call, self.per_token, self.clock = per_call, per_token, clock

    @property
    def dimensions(self) -> int:
        return 4

    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        self.clock.now += self.per_call + self.per_token * input_ids.size
        return np.ones((*input_ids.shape, 4), dtype=np.float32)


def _measure(per_call: float, per_token: float, max_tokens: int) -> dict:
    clock = _Clock()
    model = _TimedModel(per_call, per_token, clock)
    return measure_call_limits(model, pad_id=0, max_tokens=max_tokens, max_rows=64, clock=clock)


def test_a_small_fast_model_gets_big_calls_and_pads_freely() -> None:
    # 5 ms per call is a big share of small calls: throughput grows up to the row cap,
    # and padding a call with 2,500 tokens costs what another call would
    record = _measure(0.005, 2e-6, max_tokens=256)
    assert record["max_call_tokens"] == 8192
    assert list(record["tokens_per_second"]) == [str(b) for b in CANDIDATE_BUDGETS]
    assert record["max_padding_tokens"] == 2500


def test_a_large_slow_model_gets_short_calls_and_pads_little() -> None:
    # 0.2 ms per token: 1024 tokens already take 0.2 s, 2048 would take 0.4 s;
    # the 1 ms a call costs beyond its tokens pays for only 5 tokens of padding
    record = _measure(0.001, 2e-4, max_tokens=512)
    assert record["max_call_tokens"] == 1024
    assert record["max_padding_tokens"] in (4, 5)  # 5, or a hair under before it is rounded down


def test_call_limits_are_measured_once_per_model_and_recorded(data_dir: Path) -> None:
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir) as engine:
        model = engine.resolve(MODEL)
        limits = model.scheduler.limits
    assert limits.max_call_tokens in CANDIDATE_BUDGETS
    assert 0 <= limits.max_padding_tokens <= limits.max_call_tokens
    served_on = f"{model.runtime.name}-{model.spec.dtype}"  # other tests serve it on other runtimes
    recorded = list((data_dir / "artifacts").glob(f"{MODEL}-*-call-limits-{served_on}-*"))
    assert len(recorded) == 1
    record = json.loads((recorded[0] / "artifact.json").read_text())
    assert (record["max_call_tokens"], record["max_padding_tokens"]) == (
        limits.max_call_tokens,
        limits.max_padding_tokens,
    )


def test_limits_given_by_the_operator_are_used_as_is(data_dir: Path) -> None:
    settings = EngineSettings(calls=CallLimitSettings(max_call_tokens=777, max_padding_tokens=33))
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir, settings) as engine:
        limits = engine.resolve(MODEL).scheduler.limits
    assert (limits.max_call_tokens, limits.max_padding_tokens) == (777, 33)
