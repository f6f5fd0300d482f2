"""Sparse and multi-vector outputs equal their references on every runtime, from one model call."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import start_server
from helpers.outputs import bge_m3_reference, tiny_bge_m3, tiny_splade

from keepwarm.catalog import ArtifactStore, DigestCache, directory_fingerprint, read_model_spec
from keepwarm.catalog.versions import model_version
from keepwarm.engine import EmbedOptions, Engine, EngineSettings
from keepwarm.engine.worker import pad_rows
from keepwarm.errors import InvalidRequest

TEXTS = [
    "hybrid search mixes lexical and semantic matches",
    "the the the repeated words keep one weight",
    "short",
]
RUNTIMES = ("onnx", "openvino", "torch")
ALL_OUTPUTS = ("dense", "sparse", "multivector")
TIMEOUT = 60  # seconds: a first request waits for the model's warm-up on a busy machine


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


def test_one_model_call_answers_dense_sparse_and_multivector(m3_dir: Path, outputs_data: Path) -> None:
    spec = read_model_spec("m3", m3_dir, overrides={"runtime": "onnx"})
    with Engine([spec], outputs_data, EngineSettings(cache_bytes=0)) as engine:
        runtime = engine.resolve("m3").runtime
        calls, run = [], runtime.outputs
        runtime.outputs = lambda *args: calls.append(1) or run(*args)
        dense_only = engine.embed_sync("m3", TEXTS)
        dense_calls = len(calls)
        answer = engine.embed_sync("m3", TEXTS, EmbedOptions(outputs=ALL_OUTPUTS))
    assert len(calls) - dense_calls == dense_calls  # the same model calls as dense alone, not one per output
    assert answer.vectors.shape == (3, 32) and len(answer.sparse) == len(answer.multivectors) == 3
    np.testing.assert_allclose(answer.vectors, dense_only.vectors, atol=1e-6)
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


@pytest.fixture(scope="module")
def outputs_server(outputs_data: Path, log_dir: Path, m3_dir: Path, splade_dir: Path):  # noqa: ANN201
    """A server for both tiny models; it reuses the exports the in-process tests built in `outputs_data`."""
    running = start_server(
        outputs_data, log_dir, "--model", f"m3={m3_dir}", "--model", f"splade={splade_dir}"
    )
    yield running
    running.stop()


def test_models_list_each_models_outputs(outputs_server) -> None:  # noqa: ANN001
    models = {m["id"]: m for m in httpx.get(f"{outputs_server.v1}/models", timeout=TIMEOUT).json()["data"]}
    assert models["m3"]["outputs"] == list(ALL_OUTPUTS)
    assert models["splade"]["outputs"] == ["sparse"]


def test_openai_route_answers_every_output_with_base64_token_matrices(outputs_server) -> None:  # noqa: ANN001
    body = {"model": "m3", "input": TEXTS, "outputs": list(ALL_OUTPUTS), "encoding_format": "base64"}
    answer = httpx.post(f"{outputs_server.v1}/embeddings", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.headers["x-model-version"]
    first = answer.json()["data"][0]
    assert set(first["sparse_embedding"]) == {"indices", "values"}
    shape = first["multi_vector"]["shape"]
    matrix = np.frombuffer(base64.b64decode(first["multi_vector"]["data"]), dtype="<f4").reshape(shape)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)


def test_tei_embed_sparse_and_embed_all(outputs_server) -> None:  # noqa: ANN001
    sparse = httpx.post(
        f"{outputs_server.url}/embed_sparse", json={"inputs": TEXTS[:2], "model": "splade"}, timeout=TIMEOUT
    )
    assert sparse.status_code == 200
    assert set(sparse.json()[0][0]) == {"index", "value"}
    tokens = httpx.post(
        f"{outputs_server.url}/embed_all", json={"inputs": "short", "model": "m3"}, timeout=TIMEOUT
    ).json()
    assert np.asarray(tokens[0]).shape[1] == 24


def test_a_missing_output_is_a_400_in_the_dialects_envelope(outputs_server) -> None:  # noqa: ANN001
    openai = httpx.post(
        f"{outputs_server.v1}/embeddings", json={"model": "splade", "input": "a"}, timeout=TIMEOUT
    )
    assert openai.status_code == 400 and "it answers: sparse" in openai.json()["error"]["message"]
    tei = httpx.post(
        f"{outputs_server.url}/embed_all", json={"inputs": "a", "model": "splade"}, timeout=TIMEOUT
    )
    assert tei.status_code == 422 and tei.json()["error_type"] == "Validation"


def test_qdrant_stores_the_sparse_output_beside_the_dense_and_finds_by_either(outputs_server) -> None:  # noqa: ANN001
    from openai import OpenAI
    from qdrant_client import QdrantClient, models

    client = OpenAI(base_url=outputs_server.v1, api_key="unused", max_retries=0)

    def embed(texts: list[str]) -> list:
        return client.embeddings.create(
            model="m3", input=texts, extra_body={"outputs": ["dense", "sparse"]}
        ).data

    store = QdrantClient(":memory:")
    store.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=32, distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
    )
    points = [
        models.PointStruct(
            id=i,
            vector={
                "dense": item.embedding,
                "sparse": models.SparseVector(**item.model_extra["sparse_embedding"]),
            },
        )
        for i, item in enumerate(embed(TEXTS))
    ]
    store.upsert("docs", points=points)
    (query,) = embed([TEXTS[1]])
    sparse_query = models.SparseVector(**query.model_extra["sparse_embedding"])
    by_sparse = store.query_points("docs", query=sparse_query, using="sparse", limit=1).points
    hybrid = store.query_points(
        "docs",
        prefetch=[
            models.Prefetch(query=sparse_query, using="sparse", limit=3),
            models.Prefetch(query=query.embedding, using="dense", limit=3),
        ],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=1,
    ).points
    assert by_sparse[0].id == hybrid[0].id == 1
