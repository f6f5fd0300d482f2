"""Sparse and multi-vector outputs equal their references on every runtime, from one model call."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers.outputs import bge_m3_reference, tiny_bge_m3, tiny_splade

from keepwarm.catalog import ArtifactStore, DigestCache, directory_fingerprint, read_model_spec
from keepwarm.catalog.versions import model_version
from keepwarm.engine import EmbedOptions, Engine
from keepwarm.engine.worker import pad_rows
from keepwarm.errors import InvalidRequest

TEXTS = [
    "hybrid search mixes lexical and semantic matches",
    "the the the repeated words keep one weight",
    "short",
]
RUNTIMES = ("onnx", "openvino", "torch")
ALL_OUTPUTS = ("dense", "sparse", "multivector")


@pytest.fixture(scope="module")
def outputs_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs-data")


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return tiny_splade(tmp_path_factory.mktemp("splade") / "splade", model_dir, seed=3)


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return tiny_bge_m3(tmp_path_factory.mktemp("m3") / "m3", model_dir, seed=4)


def _runtime(name: str, directory: Path, runtime: str, data_dir: Path):  # noqa: ANN202 - a Runtime
    """The model on one runtime; onnx and openvino share the one verified export."""
    from keepwarm.runtimes.factory import onnx_fp32_artifact

    spec = read_model_spec(name, directory, overrides={"runtime": runtime})
    if runtime == "torch":
        from keepwarm.runtimes.pytorch import TorchRuntime

        return spec, TorchRuntime(spec)
    fingerprint = directory_fingerprint(directory, DigestCache(data_dir / "digests.json"))
    folder, artifact = onnx_fp32_artifact(
        dataclasses.replace(spec, runtime="auto"), ArtifactStore(data_dir), fingerprint
    )
    if runtime == "onnx":
        from keepwarm.runtimes.ort import OnnxRuntime

        return spec, OnnxRuntime(spec, folder / artifact["file"])
    from keepwarm.runtimes.openvino import OpenVinoRuntime

    return spec, OpenVinoRuntime(spec, folder / artifact["file"], precision="f32")


def _batch(directory: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from keepwarm.engine.tokenization import ModelTokenizer

    spec = read_model_spec("any", directory)
    tokenizer = ModelTokenizer(spec)
    return pad_rows(tokenizer.encode_texts(texts, overflow="truncate").ids, tokenizer.pad_id)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_splade_equals_sparse_encoder(runtime: str, splade_dir: Path, outputs_data: Path) -> None:
    from sentence_transformers import SparseEncoder

    expected = (
        SparseEncoder(str(splade_dir), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    )
    _, model = _runtime("splade", splade_dir, runtime, outputs_data)
    rows = model.produce(*_batch(splade_dir, TEXTS), frozenset({"sparse"}))
    for row, reference in zip(rows, expected, strict=True):
        (indices,) = np.nonzero(reference)
        assert np.array_equal(row.sparse.indices, indices)
        np.testing.assert_allclose(row.sparse.values, reference[indices], atol=1e-4)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bge_m3_sparse_and_colbert_equal_the_published_formulas(
    runtime: str, m3_dir: Path, outputs_data: Path
) -> None:
    weights, colbert = bge_m3_reference(m3_dir, TEXTS)
    _, model = _runtime("m3", m3_dir, runtime, outputs_data)
    rows = model.produce(*_batch(m3_dir, TEXTS), frozenset({"sparse", "multivector"}))
    for row, lexical, vectors in zip(rows, weights, colbert, strict=True):
        assert row.sparse.indices.tolist() == sorted(lexical)
        np.testing.assert_allclose(row.sparse.values, [lexical[i] for i in sorted(lexical)], atol=1e-4)
        np.testing.assert_allclose(row.multivector, vectors, atol=1e-4)


def test_one_model_call_answers_dense_sparse_and_multivector(
    m3_dir: Path, outputs_data: Path, reference
) -> None:  # noqa: ANN001
    spec = read_model_spec("m3", m3_dir, overrides={"runtime": "onnx"})
    with Engine([spec], outputs_data) as engine:
        runtime = engine.resolve("m3").runtime
        calls, run = [], runtime.outputs
        runtime.outputs = lambda *args: calls.append(1) or run(*args)
        answer = engine.embed_sync("m3", TEXTS, EmbedOptions(outputs=ALL_OUTPUTS))
        assert len(calls) == 1
        dense_only = engine.embed_sync("m3", TEXTS[:1])
    assert answer.vectors.shape == (3, 32) and len(answer.sparse) == len(answer.multivectors) == 3
    np.testing.assert_allclose(answer.vectors[:1], dense_only.vectors, atol=1e-6)
    assert answer.multivectors[0].shape[1] == 24


def test_a_missing_output_is_refused_naming_the_ones_the_model_has(
    splade_dir: Path, outputs_data: Path
) -> None:
    spec = read_model_spec("splade", splade_dir, overrides={"runtime": "onnx"})
    with (
        Engine([spec], outputs_data) as engine,
        pytest.raises(InvalidRequest, match="it answers: sparse") as refused,
    ):
        engine.embed_sync("splade", TEXTS, EmbedOptions(outputs=("multivector",)))
    assert refused.value.param == "outputs"


def test_sparse_top_k_keeps_the_heaviest_entries_sorted_by_id(splade_dir: Path, outputs_data: Path) -> None:
    spec = read_model_spec("splade", splade_dir, overrides={"runtime": "onnx"})
    with Engine([spec], outputs_data) as engine:
        full = engine.embed_sync("splade", TEXTS[:1], EmbedOptions(outputs=("sparse",))).sparse[0]
        top = engine.embed_sync(
            "splade", TEXTS[:1], EmbedOptions(outputs=("sparse",), sparse_top_k=5)
        ).sparse[0]
    heaviest = np.sort(full.indices[np.argsort(-full.values)[:5]])
    assert top.indices.tolist() == heaviest.tolist()
    assert np.all(np.diff(top.indices) > 0)


def test_each_output_is_part_of_the_model_version(m3_dir: Path) -> None:
    spec = read_model_spec("m3", m3_dir)
    assert spec.outputs == ALL_OUTPUTS
    dense_only = dataclasses.replace(spec, outputs=("dense",))
    assert model_version(spec, "files") != model_version(dense_only, "files")
