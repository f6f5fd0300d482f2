"""`keepwarm eval` beyond float dense vectors: compressed dtypes and learned sparse vectors.

Each pipeline's metrics are checked against an independent reference on the same run:
brute-force NumPy scores over every document (Hamming distance by XOR and bit count,
integer dot products in int64, sparse dot products by dictionaries), ranked and scored by
pytrec_eval.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytrec_eval
from helpers import MODEL, keepwarm
from helpers.beir import tiny_beir
from helpers.outputs import calibration_ranges, tiny_bge_m3, tiny_splade
from helpers.server import start_server, state_dir, wait_for

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.cost import Pricing
from keepwarm.dashboard.views import version_groups
from keepwarm.datasets.builtin import builtin_set
from keepwarm.engine import EmbedOptions, Engine, EngineSettings
from keepwarm.evaluation import (
    Dense,
    EngineEmbedder,
    MultiVector,
    Sparse,
    Target,
    exact_search,
    maxsim,
    run_evaluation,
    sparse_search,
)
from keepwarm.evaluation.builds import (
    BUILD_DOCUMENTS,
    BUILD_QUERIES,
    BUILD_SET,
    compressed_loss,
)
from keepwarm.evaluation.metrics import ranking
from keepwarm.evaluation.multivector import TokenRows
from keepwarm.outputs.compress import COMPRESSED_DTYPES, quantize
from keepwarm.outputs.sparse import SparseVector

QUERIES, DOCUMENTS = 20, 60  # at most 100 documents: every document is in every query's run


def _eval(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return keepwarm("eval", *args, "--data-dir", str(data_dir), check=False, timeout=600)


def _reference_metrics(scores: np.ndarray, dataset) -> dict[str, float]:  # noqa: ANN001 - a RetrievalSet
    """pytrec_eval's means for scores [queries, documents] over the whole corpus (NaN: not retrieved)."""
    doc_ids = list(dataset.documents)
    run = {
        query: {doc: float(score) for doc, score in zip(doc_ids, row, strict=True) if not np.isnan(score)}
        for query, row in zip(dataset.queries, scores, strict=True)
    }
    measures = pytrec_eval.RelevanceEvaluator(dataset.qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
    top10 = {q: {d: s[d] for d in ranking(s, 10)} for q, s in run.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(dataset.qrels, {"recip_rank"}).evaluate(top10)
    mean = lambda source, key: float(np.mean([source[q][key] for q in dataset.qrels]))  # noqa: E731
    return {
        "ndcg@10": mean(measures, "ndcg_cut_10"),
        "recall@10": mean(measures, "recall_10"),
        "recall@100": mean(measures, "recall_100"),
        "mrr@10": mean(reciprocal, "recip_rank"),
    }


@pytest.fixture(scope="module")
def engine(server, data_dir: Path) -> Iterator[Engine]:  # noqa: ANN001 - `server` built the artifacts
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir, EngineSettings(cache_bytes=0)) as running:
        yield running


def _float_vectors(engine: Engine, texts: list[str]) -> np.ndarray:
    return engine.embed_sync(MODEL, texts, EmbedOptions(truncate=True)).vectors


def _sample_vectors(engine: Engine, dataset) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Float vectors of the queries (one per call, as the pipelines send them) and of the documents."""
    queries = np.concatenate([_float_vectors(engine, [query]) for query in dataset.queries.values()])
    return queries, _float_vectors(engine, list(dataset.documents.values()))


def _compressed_scores(
    queries: np.ndarray, documents: np.ndarray, dtype: str, ranges: np.ndarray
) -> np.ndarray:
    """Every query's score of every document: integer dot products in int64, or minus the Hamming distance."""
    if dtype == "float":
        return queries.astype(np.float64) @ documents.astype(np.float64).T
    queries, documents = (quantize(vectors, dtype, ranges) for vectors in (queries, documents))
    if dtype in ("binary", "ubinary"):
        distance = np.bitwise_count(queries.view(np.uint8)[:, None, :] ^ documents.view(np.uint8)[None])
        return -distance.sum(axis=2).astype(np.float64)
    return (queries.astype(np.int64) @ documents.astype(np.int64).T).astype(np.float64)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_compressed_dense_metrics_equal_a_brute_force_reference(
    dtype: str, engine: Engine, data_dir: Path
) -> None:
    dataset = builtin_set("docs", QUERIES, DOCUMENTS)
    (row,) = run_evaluation(
        [dataset], [Dense(EngineEmbedder(engine, Target.parse(f"{MODEL},dtype={dtype}")))], Pricing()
    )
    # the reference quantizes float vectors itself, with the ranges the engine recorded
    ranges = calibration_ranges(data_dir, MODEL)
    scores = _compressed_scores(*_sample_vectors(engine, dataset), dtype, ranges)
    expected = _reference_metrics(scores, dataset)
    for metric, value in expected.items():
        assert row[metric] == pytest.approx(value, abs=1e-4), metric
    assert row["model"] == f"{MODEL},dtype={dtype}"


def test_compressed_targets_through_a_running_server_match_in_process(
    server, data_dir: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    targets = (f"{MODEL},dtype=int8", f"{MODEL},dtype=binary,dimensions=128")
    results = {}
    for where, args in (("server", ("--url", server.url)), ("in-process", ())):
        out = tmp_path / f"{where}.json"
        result = _eval(
            *targets,
            *args,
            *("--dataset", "docs", "--queries", str(QUERIES), "--documents", str(DOCUMENTS)),
            *("--pipelines", "dense", "--json", str(out)),
            data_dir=data_dir,
        )
        assert result.returncode == 0, result.stderr
        results[where] = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    labels = [Target.parse(target).label for target in targets]  # options in a fixed order
    assert set(results["server"]) == set(labels)
    for target in labels:
        for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "version", "dimensions"):
            assert results["server"][target][metric] == results["in-process"][target][metric], metric
    assert results["server"][labels[1]]["dimensions"] == 128


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (f"{MODEL},dtype=fp16", "dtype=int8|uint8|binary|ubinary"),
        (f"{MODEL},output=sparse,dtype=int8", "apply to dense vectors"),
        (f"{MODEL},dtype=int8,dtype=binary", "expected MODEL"),
    ],
    ids=["unknown-dtype", "sparse-with-dtype", "repeated-option"],
)
def test_bad_targets_are_usage_errors(target: str, message: str, tmp_path: Path) -> None:
    result = _eval(target, data_dir=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def sparse_models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> tuple[str, ...]:
    """`--model` options for a tiny SPLADE model and a tiny bge-m3 (dense, sparse and ColBERT heads)."""
    splade = tiny_splade(tmp_path_factory.mktemp("splade") / "splade", model_dir, seed=3)
    m3 = tiny_bge_m3(tmp_path_factory.mktemp("m3") / "m3", model_dir, seed=4)
    return ("--model", f"splade={splade}", "--model", f"m3={m3}")


@pytest.fixture(scope="module")
def sparse_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sparse-data")


def _sparse_reference_scores(engine: Engine, model: str, dataset) -> np.ndarray:  # noqa: ANN001
    """Dot products of the engine's sparse vectors, summed over shared ids with dictionaries."""
    options = EmbedOptions(truncate=True, outputs=("sparse",))
    rows = {
        kind: [
            dict(zip(v.indices.tolist(), v.values.tolist(), strict=True))
            for v in engine.embed_sync(model, list(texts), options).sparse
        ]
        for kind, texts in (("q", dataset.queries.values()), ("d", dataset.documents.values()))
    }
    return np.array([[sum(w * d.get(i, 0.0) for i, w in q.items()) for d in rows["d"]] for q in rows["q"]])


def _maxsim_reference_scores(engine: Engine, dataset) -> np.ndarray:  # noqa: ANN001
    """ColBERT's MaxSim, one query and one document at a time: Σ over query tokens of the best dot product."""
    options = EmbedOptions(truncate=True, outputs=("multivector",))
    queries, documents = (
        engine.embed_sync("m3", list(texts), options).multivectors
        for texts in (dataset.queries.values(), dataset.documents.values())
    )
    return np.array(
        [[float(sum(max(float(t @ u) for u in d) for t in q)) for d in documents] for q in queries]
    )


def test_multivector_metrics_equal_a_brute_force_reference(
    sparse_models: tuple[str, ...], sparse_data: Path
) -> None:
    from keepwarm.catalog import read_model_spec

    dataset = builtin_set("docs", 10, 30)
    spec = read_model_spec("m3", Path(sparse_models[3].split("=", 1)[1]))
    with Engine([spec], sparse_data, EngineSettings(cache_bytes=0)) as engine:
        (row,) = run_evaluation(
            [dataset], [MultiVector(EngineEmbedder(engine, Target.parse("m3,output=multivector")))], Pricing()
        )
        scores = _maxsim_reference_scores(engine, dataset)
    for metric, value in _reference_metrics(scores, dataset).items():
        assert row[metric] == pytest.approx(value, abs=1e-4), metric
    assert row["pipeline"] == "multivector" and row["docs_per_s"] > 0


@pytest.mark.parametrize("model", ["splade", "m3"])
def test_sparse_metrics_equal_a_brute_force_reference(
    model: str, sparse_models: tuple[str, ...], sparse_data: Path
) -> None:
    from keepwarm.catalog import read_model_spec

    directory = Path(sparse_models[1 if model == "splade" else 3].split("=", 1)[1])
    dataset = builtin_set("docs", QUERIES, DOCUMENTS)
    spec = read_model_spec(model, directory)
    with Engine([spec], sparse_data, EngineSettings(cache_bytes=0)) as engine:
        (row,) = run_evaluation(
            [dataset], [Sparse(EngineEmbedder(engine, Target.parse(f"{model},output=sparse")))], Pricing()
        )
        scores = _sparse_reference_scores(engine, model, dataset)
    # a document sharing no id with the query is not retrieved, as in a sparse index
    expected = _reference_metrics(np.where(scores > 0, scores, np.nan), dataset)
    for metric, value in expected.items():
        assert row[metric] == pytest.approx(value, abs=1e-4), metric
    assert row["pipeline"] == "sparse" and row["dimensions"] is None and row["docs_per_s"] > 0


def test_eval_runs_sparse_and_fuses_it_with_dense_in_process_and_through_a_server(
    sparse_models: tuple[str, ...], sparse_data: Path, log_dir: Path, tmp_path: Path
) -> None:
    beir = tiny_beir(tmp_path / "kitchen")
    targets = ("m3", "splade,output=sparse", "m3,output=sparse", "m3,output=multivector")
    sets = (
        "--dataset",
        "docs",
        "--queries",
        str(QUERIES),
        "--documents",
        str(DOCUMENTS),
        "--dataset",
        str(beir),
    )
    out = tmp_path / "in-process.json"
    result = _eval(*targets, *sparse_models, *sets, "--json", str(out), data_dir=sparse_data)
    assert result.returncode == 0, result.stderr
    rows = {(r["dataset"], r["pipeline"], r["model"]): r for r in json.loads(out.read_text())["results"]}
    sparse = ("splade,output=sparse", "m3,output=sparse")
    assert set(rows) == {
        (dataset, kind, name)
        for dataset in ("docs", "kitchen")
        for kind, name in [
            ("dense", "m3"),
            *(("sparse", s) for s in sparse),
            ("multivector", "m3,output=multivector"),
            ("bm25", "bm25"),
            *(("hybrid", f"m3 + {other}") for other in ("bm25", *sparse)),
        ]
    }
    server = start_server(sparse_data, log_dir, *sparse_models)
    try:
        out = tmp_path / "server.json"
        result = _eval(
            *targets,
            *sets,
            "--url",
            server.url,
            "--pipelines",
            "sparse,multivector,hybrid",
            "--json",
            str(out),
            data_dir=sparse_data,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    served = {(r["dataset"], r["pipeline"], r["model"]): r for r in json.loads(out.read_text())["results"]}
    assert set(served) == {key for key in rows if key[1] in ("sparse", "multivector", "hybrid")}
    for key, row in served.items():
        for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "version"):
            assert row[metric] == rows[key][metric], (key, metric)


@pytest.mark.parametrize("kind", ["sparse", "multivector"])
def test_an_output_pipeline_needs_a_target_of_that_output(kind: str, tmp_path: Path) -> None:
    result = _eval(MODEL, "--pipelines", kind, data_dir=tmp_path)
    assert result.returncode == 2 and f"MODEL,output={kind}" in result.stderr


def _top10(scores: np.ndarray, dataset) -> list[list[str]]:  # noqa: ANN001
    doc_ids = list(dataset.documents)
    return [ranking(dict(zip(doc_ids, row.tolist(), strict=True)), 10) for row in scores]


def test_compressed_loss_equals_a_brute_force_reference_on_the_same_vectors(
    engine: Engine, data_dir: Path
) -> None:
    sample = builtin_set(BUILD_SET, BUILD_QUERIES, BUILD_DOCUMENTS)
    queries, documents = _sample_vectors(engine, sample)
    # each text's vector fixed once: batches of other shapes move the last bits, which can move
    # a value across a bucket edge, so the build and the reference must see the same vectors
    texts = [*sample.queries.values(), *sample.documents.values()]
    table = dict(zip(texts, [*queries, *documents], strict=True)) | {"?": queries[0]}
    ranges = calibration_ranges(data_dir, MODEL)
    recorded = compressed_loss(MODEL, lambda texts, _: np.stack([table[t] for t in texts]), ranges)
    float_scores = _compressed_scores(queries, documents, "float", ranges)
    reference = _reference_metrics(float_scores, sample)
    assert set(recorded) == set(COMPRESSED_DTYPES)
    for dtype, check in recorded.items():
        scores = _compressed_scores(queries, documents, dtype, ranges)
        tops = zip(_top10(float_scores, sample), _top10(scores, sample), strict=True)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in tops])
        assert check["recall@10_vs_reference"] == pytest.approx(overlap, abs=6e-5), dtype
        assert check["ndcg@10"] == pytest.approx(_reference_metrics(scores, sample)["ndcg@10"], abs=6e-5)
        assert check["reference_ndcg@10"] == pytest.approx(reference["ndcg@10"], abs=6e-5)
        assert check["ndcg@10_change"] == pytest.approx(
            check["ndcg@10"] - check["reference_ndcg@10"], abs=2e-4
        )
    assert recorded["binary"]["recall@10_vs_reference"] < recorded["int8"]["recall@10_vs_reference"] < 1


def test_compressed_dtypes_record_their_search_loss_when_their_calibration_is_built(
    server, data_dir: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    own = state_dir(data_dir, tmp_path / "data")  # the model's export, but no calibration yet
    for built in [
        *(own / "artifacts").glob("*calibration*"),
        *(own / "artifacts").glob("*compressed-retrieval*"),
    ]:
        built.unlink()
    with Engine([DEFAULT_ENTRY.to_spec()], own, EngineSettings(cache_bytes=0)) as engine:
        assert engine.describe(MODEL)[0].compressed_retrieval is None
        engine.embed_sync(MODEL, ["first int8 request"], EmbedOptions(output_dtypes=("int8",)))
        # measured off the request's path: the answer does not wait for it
        assert wait_for(lambda: engine.describe(MODEL)[0].compressed_retrieval, timeout=300)
        recorded = engine.describe(MODEL)[0].compressed_retrieval
        assert set(recorded) == set(COMPRESSED_DTYPES)
        sample = builtin_set(BUILD_SET, BUILD_QUERIES, BUILD_DOCUMENTS)
        float_scores = _compressed_scores(*_sample_vectors(engine, sample), "float", None)
        # measured through the model's queue (the previous test checks the arithmetic exactly)
        assert recorded["int8"]["reference_ndcg@10"] == pytest.approx(
            _reference_metrics(float_scores, sample)["ndcg@10"], abs=0.01
        )
        assert recorded["binary"]["recall@10_vs_reference"] < recorded["int8"]["recall@10_vs_reference"] < 1
        (meta,) = (own / "artifacts").glob(f"{MODEL}-*-compressed-retrieval-*/artifact.json")
        assert json.loads(meta.read_text())["retrieval"] == recorded  # kept as an artifact
        groups = version_groups(engine.catalog())
        assert "int8: recall@10 " in groups[0]["versions"][0]["shown"]["compressed"]
    with Engine([DEFAULT_ENTRY.to_spec()], own, EngineSettings(cache_bytes=0)) as restarted:
        assert restarted.describe(MODEL)[0].compressed_retrieval == recorded  # read, before any request


def test_models_endpoint_shows_the_compressed_search_loss(server, data_dir: Path) -> None:  # noqa: ANN001
    body = {"model": MODEL, "input": ["a query"], "output_dtype": "uint8"}
    assert httpx.post(f"{server.v1}/embeddings", json=body, timeout=60).status_code == 200

    def model() -> dict:
        return httpx.get(f"{server.v1}/models/{MODEL}", timeout=60).json()

    assert wait_for(lambda: model()["compressed_retrieval"], timeout=300, interval=0.5)  # measured later
    described = model()
    (meta,) = (data_dir / "artifacts").glob(f"{MODEL}-*-compressed-retrieval-*/artifact.json")
    assert described["compressed_retrieval"] == json.loads(meta.read_text())["retrieval"]
    assert set(described["compressed_retrieval"]) == set(COMPRESSED_DTYPES)


def test_sparse_search_over_many_blocks_equals_brute_force() -> None:
    rng = np.random.default_rng(11)

    def vector() -> SparseVector:
        ids = np.sort(rng.choice(50, size=rng.integers(1, 8), replace=False)).astype(np.int64)
        return SparseVector(ids, rng.random(len(ids)).astype(np.float32))

    queries, documents = [vector() for _ in range(9)], [vector() for _ in range(40)]
    found, scores = sparse_search(queries, documents, 5, rows=7)  # six blocks, the last shorter
    dense = lambda vs: np.array([np.bincount(v.indices, v.values, minlength=50) for v in vs])  # noqa: E731
    expected = dense(queries) @ dense(documents).T
    for row, (ids, best) in enumerate(zip(found, scores, strict=True)):
        np.testing.assert_allclose(best, np.sort(expected[row])[::-1][:5], rtol=1e-5)
        np.testing.assert_allclose(expected[row, ids], best, rtol=1e-5)


def test_maxsim_search_over_many_token_files_equals_brute_force() -> None:
    rng = np.random.default_rng(12)
    matrices = lambda n: [rng.normal(size=(rng.integers(1, 6), 8)).astype(np.float32) for _ in range(n)]  # noqa: E731
    queries, documents = matrices(20), matrices(45)
    blocks = [TokenRows.of(documents[start : start + 10]) for start in range(0, 45, 10)]
    found, scores = exact_search(TokenRows.of(queries), blocks, 5, score=maxsim)
    expected = np.array([[sum(max(t @ u for u in d) for t in q) for d in documents] for q in queries])
    for row, (ids, best) in enumerate(zip(found, scores, strict=True)):
        np.testing.assert_allclose(best, np.sort(expected[row])[::-1][:5], rtol=1e-4)
        np.testing.assert_allclose(expected[row, ids], best, rtol=1e-4)


def test_without_targets_a_model_with_only_sparse_vectors_is_searched_by_them(
    sparse_models: tuple[str, ...], sparse_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "default.json"
    splade = sparse_models[:2]  # the only configured model: SPLADE has no dense output
    args = ("--dataset", str(tiny_beir(tmp_path / "kitchen")), "--pipelines", "dense,sparse")
    result = _eval(*splade, *args, "--json", str(out), data_dir=sparse_data)
    assert result.returncode == 0, result.stderr
    rows = {(r["pipeline"], r["model"]) for r in json.loads(out.read_text())["results"]}
    assert rows == {("sparse", "splade,output=sparse")}
