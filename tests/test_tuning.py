"""Per-model batching (token budget, padding allowance): measured at first load, recorded, reused, overridable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from helpers import MODEL

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.engine import BatchLimits, Engine, EngineSettings
from keepwarm.engine.tuning import CANDIDATE_BUDGETS, measure_batching
from keepwarm.runtimes.base import Runtime


class _TimedModel(Runtime):
    """Stands in for a model of a known cost: a fixed cost per call plus a cost per token."""

    name = "timed"

    def __init__(self, per_call: float, per_token: float) -> None:
        super().__init__(DEFAULT_ENTRY.to_spec())
        self.per_call, self.per_token = per_call, per_token

    @property
    def dimensions(self) -> int:
        return 4

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        time.sleep(self.per_call + self.per_token * input_ids.size)
        return np.ones((*input_ids.shape, 4), dtype=np.float32)


def test_a_small_fast_model_gets_big_calls_and_pads_freely() -> None:
    # 5 ms per call is a big share of small calls: throughput grows up to the row cap,
    # and padding a call with 2,500 tokens costs what another call would
    record = measure_batching(_TimedModel(0.005, 2e-6), pad_id=0, max_tokens=256, max_rows=64)
    assert record["max_batch_tokens"] == 8192
    assert list(record["tokens_per_second"]) == [str(b) for b in CANDIDATE_BUDGETS]
    assert 2000 <= record["max_padding_tokens"] <= 3200


def test_a_large_slow_model_gets_short_calls_and_pads_little() -> None:
    # 0.2 ms per token: 1024 tokens already take 0.2 s, 2048 would take 0.4 s;
    # the 1 ms a call costs beyond its tokens pays for only 5 tokens of padding
    record = measure_batching(_TimedModel(0.001, 2e-4), pad_id=0, max_tokens=512, max_rows=64)
    assert record["max_batch_tokens"] == 1024
    assert record["max_padding_tokens"] <= 20


def test_batching_is_measured_once_per_model_and_recorded(data_dir: Path) -> None:
    engine = Engine([DEFAULT_ENTRY.to_spec()], data_dir)
    engine.load()
    try:
        limits = engine.resolve(MODEL).scheduler.limits
    finally:
        engine.close()
    assert limits.max_batch_tokens in CANDIDATE_BUDGETS
    assert 0 <= limits.max_padding_tokens <= limits.max_batch_tokens
    recorded = list((data_dir / "artifacts").glob(f"{MODEL}-*-batching-*"))
    assert len(recorded) == 1
    record = json.loads((recorded[0] / "artifact.json").read_text())
    assert (record["max_batch_tokens"], record["max_padding_tokens"]) == (
        limits.max_batch_tokens, limits.max_padding_tokens
    )


def test_limits_given_by_the_operator_are_used_as_is(data_dir: Path) -> None:
    settings = EngineSettings(batch=BatchLimits(max_batch_tokens=777, max_padding_tokens=33))
    engine = Engine([DEFAULT_ENTRY.to_spec()], data_dir, settings)
    engine.load()
    try:
        limits = engine.resolve(MODEL).scheduler.limits
    finally:
        engine.close()
    assert (limits.max_batch_tokens, limits.max_padding_tokens) == (777, 33)
