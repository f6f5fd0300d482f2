"""The per-model token budget: measured at first load, recorded, reused, overridable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from conftest import MODEL

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.engine import BatchLimits, Engine, EngineSettings
from keepwarm.engine.tuning import CANDIDATE_BUDGETS, measure_token_budget
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


def test_a_small_fast_model_gets_big_calls() -> None:
    # 5 ms per call is a big share of small calls: throughput grows up to the row cap
    record = measure_token_budget(_TimedModel(0.005, 2e-6), pad_id=0, max_tokens=256, max_rows=64)
    assert record["max_batch_tokens"] == 8192
    assert list(record["tokens_per_second"]) == [str(b) for b in CANDIDATE_BUDGETS]


def test_a_large_slow_model_gets_calls_of_a_quarter_second_at_most() -> None:
    # 0.2 ms per token: 1024 tokens already take 0.2 s, 2048 would take 0.4 s
    record = measure_token_budget(_TimedModel(0.001, 2e-4), pad_id=0, max_tokens=512, max_rows=64)
    assert record["max_batch_tokens"] == 1024


def test_the_budget_is_measured_once_per_model_and_shown(data_dir: Path) -> None:
    engine = Engine([DEFAULT_ENTRY.to_spec()], data_dir)
    engine.load()
    try:
        budget = engine.resolve(MODEL).scheduler.limits.max_batch_tokens
    finally:
        engine.close()
    assert budget in CANDIDATE_BUDGETS
    recorded = list((data_dir / "artifacts").glob(f"{MODEL}-*-batch-budget-*"))
    assert len(recorded) == 1 and json.loads((recorded[0] / "artifact.json").read_text())["max_batch_tokens"] == budget


def test_a_budget_given_by_the_operator_is_used_as_is(data_dir: Path) -> None:
    settings = EngineSettings(batch=BatchLimits(max_batch_tokens=777))
    engine = Engine([DEFAULT_ENTRY.to_spec()], data_dir, settings)
    engine.load()
    try:
        assert engine.resolve(MODEL).scheduler.limits.max_batch_tokens == 777
    finally:
        engine.close()
