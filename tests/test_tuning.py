"""Per-model call limits (token budget, padding allowance, width rounding): measured at first load,
recorded, reused, overridable.

The choice is tested on a model of a known cost with a clock that only it advances, so the
verdict is the same on any machine, however busy.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import MODEL

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.engine import CallLimitSettings, Engine, EngineSettings
from keepwarm.engine.scheduler import CallLimits, Scheduler, call_width
from keepwarm.engine.tuning import CANDIDATE_BUDGETS, ROUNDING_WIDEST, TOKEN_MULTIPLE, measure_call_limits
from keepwarm.engine.work import Job, WorkItem
from keepwarm.engine.worker import ModelWorker, model_inputs
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
    prepares_each_shape = True  # OpenVINO-like, so the rounding is measured

    def __init__(self, per_call: float, per_token: float, clock: _Clock, per_new_width: float = 0.0) -> None:
        super().__init__(DEFAULT_ENTRY.to_spec())
        self.per_call, self.per_token, self.clock = per_call, per_token, clock
        # OpenVINO-like: preparation for each new width (measured: widths rounded alone, rows
        # still varying, gained for int8, so most of its cost goes with the width)
        self.per_new_width, self.seen = per_new_width, set()

    @property
    def dimensions(self) -> int:
        return 4

    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        self.clock.now += self.per_call + self.per_token * input_ids.size
        if input_ids.shape[1] not in self.seen:
            self.seen.add(input_ids.shape[1])
            self.clock.now += self.per_new_width
        return np.ones((*input_ids.shape, 4), dtype=np.float32)


def _measure(per_call: float, per_token: float, max_tokens: int, per_new_width: float = 0.0) -> dict:
    clock = _Clock()
    model = _TimedModel(per_call, per_token, clock, per_new_width)
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


def test_widths_are_rounded_where_new_widths_cost_more_than_the_padding() -> None:
    # int8-like: cheap tokens, 20 ms to prepare each new width; rounded widths repeat
    assert _measure(0.005, 2e-6, max_tokens=256, per_new_width=0.02)["token_multiple"] == TOKEN_MULTIPLE
    # no cost per width: rounding only adds padding, so widths stay exact
    record = _measure(0.005, 2e-5, max_tokens=256)
    assert record["token_multiple"] == 1
    assert record["rounding_seconds"]["rounded"] > record["rounding_seconds"]["exact"]


def test_rounding_is_judged_on_the_prepared_shapes_a_server_meets() -> None:
    # a server's rounded shapes repeat, its exact ones rarely: rounded calls are timed once
    # prepared, exact ones new, so only the exact timing carries the cost of preparation
    cheap, costly = (_measure(0.002, 1e-5, max_tokens=256, per_new_width=cost) for cost in (0.0, 0.05))
    assert costly["rounding_seconds"]["rounded"] == pytest.approx(cheap["rounding_seconds"]["rounded"])
    assert costly["rounding_seconds"]["exact"] > cheap["rounding_seconds"]["exact"] + 0.05
    assert (cheap["token_multiple"], costly["token_multiple"]) == (1, TOKEN_MULTIPLE)


def test_the_padding_allowance_counts_preparation_only_where_widths_stay_exact() -> None:
    # rounded widths repeat, so one more call costs its 2 ms and no preparation: 200 tokens
    # of padding at 10 us a token, not the 5,200 that 50 ms of preparation would allow
    rounded = _measure(0.002, 1e-5, max_tokens=256, per_new_width=0.05)
    assert rounded["token_multiple"] == TOKEN_MULTIPLE
    assert rounded["max_padding_tokens"] in (199, 200)
    # exact widths: every call of a server is a new shape, so another call costs its preparation too
    exact = _measure(0.001, 2e-4, max_tokens=512, per_new_width=0.001)
    assert exact["token_multiple"] == 1
    assert exact["max_padding_tokens"] in (9, 10)


def test_a_long_context_model_is_measured_on_calls_of_served_widths() -> None:
    # an 8K-token model: calls as wide as its limit would be most of the time spent loading it
    clock = _Clock()
    model = _TimedModel(0.001, 2e-4, clock, per_new_width=0.02)
    record = measure_call_limits(model, pad_id=0, max_tokens=8192, max_rows=64, clock=clock)
    assert record["max_call_tokens"] == 1024
    assert TOKEN_MULTIPLE < max(model.seen) <= min(ROUNDING_WIDEST, record["max_call_tokens"])


def test_a_runtime_with_no_cost_per_shape_keeps_exact_widths_without_timing_them() -> None:
    clock = _Clock()
    model = _TimedModel(0.005, 2e-6, clock, per_new_width=0.02)
    model.prepares_each_shape = False  # as ONNX Runtime and PyTorch
    record = measure_call_limits(model, pad_id=0, max_tokens=256, max_rows=64, clock=clock)
    assert (record["token_multiple"], record["rounding_seconds"]) == (1, {})


def test_rounded_widths_stay_within_the_model_limit() -> None:
    assert [call_width(n, 32, 256) for n in (1, 32, 33, 250, 256)] == [32, 32, 64, 256, 256]
    assert call_width(500, 32, 510) == 510  # not 512: the model has no position past its limit
    assert call_width(17, 1, 256) == 17


def test_rounded_widths_give_the_vectors_of_exact_widths(data_dir: Path) -> None:
    spec = dataclasses.replace(DEFAULT_ENTRY.to_spec(), runtime="onnx")  # fp32, bit-stable
    with Engine([spec], data_dir) as engine:
        model = engine.resolve(MODEL)
        texts = ["a", "two words", "a somewhat longer sentence about padding and masks " * 3]
        ids = model.tokenizer.encode_texts(texts, overflow="truncate").ids
        exact = model.runtime.embed(*model_inputs(ids, None, model.tokenizer.pad_id))
        longest = max(len(row) for row in ids)
        width = call_width(longest, TOKEN_MULTIPLE, spec.max_tokens)
        rounded_inputs = model_inputs(ids, None, model.tokenizer.pad_id, width=width)
        rounded = model.runtime.embed(*rounded_inputs)
    assert rounded_inputs[0].shape[1] == width > longest  # really padded further
    assert width % TOKEN_MULTIPLE == 0
    np.testing.assert_allclose(rounded, exact, atol=1e-5)


def _one_call(lengths: tuple[int, ...]) -> tuple[set[int], list[tuple[int, int, int]]]:
    """The widths one call of rows of these lengths ran at, and its (rows, real, padded) as observed."""
    model = _TimedModel(0.0, 0.0, _Clock())
    scheduler = Scheduler(CallLimits(2048, 64, 10**6, 100, token_multiple=TOKEN_MULTIPLE))
    observed: list[tuple[int, int, int]] = []

    def observe(rows: int, real: int, padded: int, *_: object) -> None:
        observed.append((rows, real, padded))

    worker = ModelWorker("timed", model, scheduler, pad_id=0, observe=observe)
    worker.start()
    job = Job(len(lengths), 4)
    scheduler.submit([WorkItem(np.ones(n, dtype=np.int64), job, i) for i, n in enumerate(lengths)])
    assert job.future.result(timeout=30).shape == (len(lengths), 4)
    scheduler.close()
    worker.join(timeout=30)
    return model.seen, observed


def test_the_worker_pads_calls_to_the_measured_multiple() -> None:
    seen, observed = _one_call((5, 40))
    assert seen == {64}  # one call, its 40-token width padded up to 64
    assert observed == [(2, 45, 128)]  # the metrics count the padding the call really holds


def test_a_lone_row_keeps_its_own_width() -> None:
    # one row's shapes are few and stay prepared: rounding would only pad it (an idle server's calls)
    assert _one_call((40,)) == ({40}, [(1, 40, 40)])


def test_call_limits_are_measured_once_per_model_and_recorded(data_dir: Path) -> None:
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir) as engine:
        model = engine.resolve(MODEL)
        limits = model.scheduler.limits
    assert limits.max_call_tokens in CANDIDATE_BUDGETS
    assert model.info.token_multiple == limits.token_multiple  # what /v1/models reports
    assert limits.max_width == model.spec.max_tokens  # no call is padded past the model's limit
    assert 0 <= limits.max_padding_tokens <= limits.max_call_tokens
    served_on = f"{model.runtime.name}-{model.spec.dtype}"  # other tests serve it on other runtimes
    recorded = list((data_dir / "artifacts").glob(f"{MODEL}-*-call-limits-v3-{served_on}-*"))
    assert len(recorded) == 1
    record = json.loads((recorded[0] / "artifact.json").read_text())
    assert (record["max_call_tokens"], record["max_padding_tokens"], record["token_multiple"]) == (
        limits.max_call_tokens,
        limits.max_padding_tokens,
        limits.token_multiple,
    )
    assert limits.token_multiple in (1, TOKEN_MULTIPLE)


def test_limits_given_by_the_operator_are_used_as_is(data_dir: Path) -> None:
    settings = EngineSettings(calls=CallLimitSettings(max_call_tokens=777, max_padding_tokens=33))
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir, settings) as engine:
        limits = engine.resolve(MODEL).scheduler.limits
    assert (limits.max_call_tokens, limits.max_padding_tokens) == (777, 33)
