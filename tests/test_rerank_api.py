"""Rerankers and classifiers served over HTTP, through the clients that speak each dialect.

One server for the module, with keys: a BERT cross-encoder (one label), an XLM-RoBERTa
classifier (three labels), a Qwen3 yes/no decoder reranker and a small embedding model,
all on PyTorch so the server starts without exports (test_rerank_engine.py covers the
runtimes in-process).
Scores are checked against sentence-transformers' CrossEncoder and, for the decoder
reranker, against its published formula computed with transformers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cohere
import httpx
import numpy as np
import openai
import pytest
import torch
import transformers
from helpers.batching import request_line, result_lines, upload, wait_finished
from helpers.cli import create_key
from helpers.models import tiny_bert, tiny_cross_encoder, tiny_yes_no_reranker
from helpers.server import RunningServer, metric, start_server
from sentence_transformers import CrossEncoder

from keepwarm.api.schemas import MAX_INPUTS
from keepwarm.store import Database, KeyStore

QUERY = "what is the capital of france"
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "The cat sat on the mat.",
    "Berlin is the capital of Germany.",
    "France is a country in Western Europe with several overseas regions.",
    "Bananas are rich in potassium.",
]
LABELS = ("negative", "neutral", "positive")
TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query. "
    'Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    "<Query>: {query}\n<Document>: {document}<|im_end|>\n<|im_start|>assistant\n"
)
BUDGET = 512  # padded tokens per model call: small, so long requests take many calls


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerank-models")
    return {
        "ce": tiny_cross_encoder(root / "ce", model_dir, seed=1),
        "clf": tiny_cross_encoder(root / "clf", model_dir, architecture="xlm-roberta", labels=LABELS, seed=2),
        "qwen": tiny_yes_no_reranker(root / "qwen", seed=3),
        "embedder": tiny_bert(root / "embedder", model_dir, seed=4),
    }


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    state = tmp_path_factory.mktemp("rerank-state")
    return state, {
        "all": create_key(state, "all"),
        "ce-only": create_key(state, "ce-only", "--models", "ce"),
        "admin": create_key(state, "admin", "--admin"),
    }


@pytest.fixture(scope="module")
def server(models: dict[str, Path], keys, log_dir: Path) -> RunningServer:  # noqa: ANN001
    state, _ = keys
    catalog = state / "catalog.toml"
    catalog.write_text(
        f"""
[[models]]
name = "ce"
source = "{models["ce"]}"
runtime = "torch"
aliases = ["ce-alias"]

[[models]]
name = "clf"
source = "{models["clf"]}"
runtime = "torch"

[[models]]
name = "qwen"
source = "{models["qwen"]}"
runtime = "torch"
task = "rerank"
rerank_template = {json.dumps(TEMPLATE)}

[[models]]
name = "embedder"
source = "{models["embedder"]}"
runtime = "torch"
"""
    )
    running = start_server(
        state,
        log_dir,
        "--config",
        str(catalog),
        "--max-batch-tokens",
        str(BUDGET),
        "--max-batch-padding-tokens",
        "64",
        "--price-per-million-tokens",
        "2",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def secrets(keys) -> dict[str, str]:  # noqa: ANN001
    return keys[1]


def _post(server: RunningServer, path: str, body: dict, secret: str, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", **headers}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60)


def _reference(directory: Path, documents: list[str], query: str = QUERY) -> np.ndarray:
    return CrossEncoder(str(directory)).predict([(query, d) for d in documents])


def _yes_no_reference(directory: Path, documents: list[str]) -> np.ndarray:
    """Qwen3-Reranker's formula: P(yes) of a softmax over the yes/no logits after the prompt."""
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    scores = []
    for document in documents:
        text = TEMPLATE.replace("{query}", QUERY).replace("{document}", document)
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, -1]
        scores.append(torch.softmax(logits[[no, yes]], dim=0)[1].item())
    return np.array(scores)


def test_cohere_v2_client_ranks_as_cross_encoder_scores(server, models, secrets) -> None:  # noqa: ANN001
    client = cohere.ClientV2(api_key=secrets["all"], base_url=server.url)
    response = client.rerank(model="ce", query=QUERY, documents=DOCUMENTS, top_n=3)
    expected = _reference(models["ce"], DOCUMENTS)
    assert [r.index for r in response.results] == list(np.argsort(-expected)[:3])
    for result in response.results:
        assert abs(result.relevance_score - expected[result.index]) < 1e-4


def test_cohere_v1_client_returns_documents(server, models, secrets) -> None:  # noqa: ANN001
    client = cohere.Client(api_key=secrets["all"], base_url=server.url)
    documents = [{"text": d} for d in DOCUMENTS]
    response = client.rerank(model="ce", query=QUERY, documents=documents, return_documents=True)
    expected = _reference(models["ce"], DOCUMENTS)
    assert len(response.results) == len(DOCUMENTS)
    for result in response.results:
        assert result.document.text == DOCUMENTS[result.index]
        assert abs(result.relevance_score - expected[result.index]) < 1e-4
    assert response.meta.billed_units.search_units == 1


def test_langchain_cohere_rerank_compresses_documents(server, models, secrets) -> None:  # noqa: ANN001
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(model="ce", top_n=2, cohere_api_key=secrets["all"], base_url=server.url)
    kept = reranker.compress_documents([Document(page_content=d) for d in DOCUMENTS], QUERY)
    expected = _reference(models["ce"], DOCUMENTS)
    best = list(np.argsort(-expected)[:2])
    assert [d.page_content for d in kept] == [DOCUMENTS[i] for i in best]
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx(expected[best], abs=1e-4)


def test_llama_index_cohere_rerank_postprocesses_nodes(server, models, secrets) -> None:  # noqa: ANN001
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    reranker = CohereRerank(api_key=secrets["all"], model="ce", top_n=2, base_url=server.url)
    nodes = [NodeWithScore(node=TextNode(text=d)) for d in DOCUMENTS]
    kept = reranker.postprocess_nodes(nodes, query_str=QUERY)
    expected = _reference(models["ce"], DOCUMENTS)
    best = list(np.argsort(-expected)[:2])
    assert [n.node.get_content() for n in kept] == [DOCUMENTS[i] for i in best]
    assert [n.score for n in kept] == pytest.approx(expected[best], abs=1e-4)


def test_haystack_tei_ranker_reaches_the_keys_only_reranker(server, models, secrets) -> None:  # noqa: ANN001
    from haystack import Document
    from haystack.components.rankers import HuggingFaceTEIRanker
    from haystack.utils import Secret

    ranker = HuggingFaceTEIRanker(url=server.url, top_k=2, token=Secret.from_token(secrets["ce-only"]))
    ranked = ranker.run(query=QUERY, documents=[Document(content=d) for d in DOCUMENTS])["documents"]
    expected = _reference(models["ce"], DOCUMENTS)
    best = list(np.argsort(-expected)[:2])
    assert [d.content for d in ranked] == [DOCUMENTS[i] for i in best]
    assert [d.score for d in ranked] == pytest.approx(expected[best], abs=1e-4)


def test_tei_rerank_raw_scores_are_the_logits(server, models, secrets) -> None:  # noqa: ANN001
    body = {"model": "ce", "query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True}
    answer = _post(server, "/rerank", body, secrets["all"]).json()
    expected = _reference(models["ce"], DOCUMENTS)
    for item in answer:
        assert item["text"] == DOCUMENTS[item["index"]]
        assert abs(item["score"] - math.log(expected[item["index"]] / (1 - expected[item["index"]]))) < 1e-4
    assert [item["index"] for item in answer] == list(np.argsort(-expected))


def test_scores_do_not_depend_on_the_other_documents(server, secrets) -> None:  # noqa: ANN001
    many = _post(
        server, "/v1/rerank", {"model": "ce", "query": QUERY, "documents": DOCUMENTS * 7}, secrets["all"]
    )
    by_index = {r["index"]: r["relevance_score"] for r in many.json()["results"]}
    for index, document in enumerate(DOCUMENTS):
        alone = _post(
            server, "/v2/rerank", {"model": "ce", "query": QUERY, "documents": [document]}, secrets["all"]
        )
        assert abs(alone.json()["results"][0]["relevance_score"] - by_index[index]) < 1e-4


def test_decoder_reranker_scores_equal_its_yes_no_formula(server, models, secrets) -> None:  # noqa: ANN001
    answer = _post(
        server, "/v1/rerank", {"model": "qwen", "query": QUERY, "documents": DOCUMENTS}, secrets["all"]
    )
    expected = _yes_no_reference(models["qwen"], DOCUMENTS)
    scores = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
    assert [scores[i] for i in range(len(DOCUMENTS))] == pytest.approx(expected, abs=1e-4)


def test_classify_gives_every_labels_probability(server, models, secrets) -> None:  # noqa: ANN001
    answer = _post(server, "/v1/classify", {"model": "clf", "input": DOCUMENTS[:3]}, secrets["all"]).json()
    tokenizer = transformers.AutoTokenizer.from_pretrained(models["clf"])
    model = transformers.AutoModelForSequenceClassification.from_pretrained(models["clf"]).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(DOCUMENTS[:3], padding=True, return_tensors="pt")).logits
    expected = torch.softmax(logits, dim=1).numpy()
    assert answer["labels"] == list(LABELS)
    for item, probs in zip(answer["data"], expected, strict=True):
        assert item["probs"] == pytest.approx(probs, abs=1e-4)
        assert item["label"] == LABELS[int(probs.argmax())] and item["score"] == pytest.approx(
            probs.max(), abs=1e-4
        )


def test_tei_predict_lists_labels_best_first(server, secrets) -> None:  # noqa: ANN001
    one = _post(server, "/predict", {"model": "clf", "inputs": DOCUMENTS[0]}, secrets["all"]).json()
    several = _post(
        server, "/predict", {"model": "clf", "inputs": [[d] for d in DOCUMENTS[:2]]}, secrets["all"]
    ).json()
    assert sorted(p["label"] for p in one) == sorted(LABELS)
    assert [p["score"] for p in one] == sorted((p["score"] for p in one), reverse=True)
    assert several[0] == one
    assert _post(server, "/predict", {"model": "clf", "inputs": [DOCUMENTS[0]]}, secrets["all"]).json() == one


def _by_label(predictions: list[dict]) -> list[float]:
    scores = {p["label"]: p["score"] for p in predictions}
    return [scores[label] for label in LABELS]


def test_tei_predict_scores_pairs_as_cross_encoder_does(server, models, secrets) -> None:  # noqa: ANN001
    pairs = [[QUERY, d] for d in DOCUMENTS[:3]]
    reference = CrossEncoder(str(models["clf"]))
    probabilities = reference.predict([tuple(p) for p in pairs], apply_softmax=True)
    logits = reference.predict([tuple(p) for p in pairs])  # three labels: no activation
    batch = _post(server, "/predict", {"model": "clf", "inputs": pairs}, secrets["all"]).json()
    raw = _post(server, "/predict", {"model": "clf", "inputs": pairs, "raw_scores": True}, secrets["all"])
    np.testing.assert_allclose([_by_label(row) for row in batch], probabilities, atol=1e-4)
    np.testing.assert_allclose([_by_label(row) for row in raw.json()], logits, atol=1e-4)
    one = _post(server, "/predict", {"model": "clf", "inputs": pairs[1]}, secrets["all"]).json()
    assert _by_label(one) == pytest.approx(probabilities[1].tolist(), abs=1e-4)
    mixed = [[DOCUMENTS[4]], pairs[2]]
    answer = _post(server, "/predict", {"model": "clf", "inputs": mixed}, secrets["all"]).json()
    with torch.inference_mode():  # a lone text: CrossEncoder.predict takes pairs only
        logit = reference.model(**reference.tokenizer([DOCUMENTS[4]], return_tensors="pt")).logits
    assert _by_label(answer[0]) == pytest.approx(torch.softmax(logit[0], dim=0).tolist(), abs=1e-4)
    assert _by_label(answer[1]) == pytest.approx(probabilities[2].tolist(), abs=1e-4)


@pytest.mark.parametrize(
    ("inputs", "status"),
    [
        (["a", "b", "c"], 422),
        ([["a", "b", "c"]], 422),
        ([], 422),
        ([[]], 422),
        (["a", ["b"]], 422),
        ([["a"], "b"], 422),
        ([["a"]] * (MAX_INPUTS + 1), 413),
    ],
)
def test_tei_predict_refuses_other_shapes_in_teis_envelope(server, secrets, inputs, status) -> None:  # noqa: ANN001
    response = _post(server, "/predict", {"model": "clf", "inputs": inputs}, secrets["all"])
    assert response.status_code == status
    assert set(response.json()) == {"error", "error_type"} and response.json()["error_type"] == "Validation"


def test_tei_truncate_false_refuses_an_over_long_input(server, secrets) -> None:  # noqa: ANN001
    long = "word " * 600
    bodies = {
        "/predict": {"model": "clf", "inputs": [[QUERY, long]], "truncate": False},
        "/rerank": {"model": "ce", "query": QUERY, "texts": [long], "truncate": False},
    }
    for path, body in bodies.items():
        refused = _post(server, path, body, secrets["all"])
        assert refused.status_code == 413 and refused.json()["error_type"] == "Validation", path
        assert _post(server, path, body | {"truncate": True}, secrets["all"]).status_code == 200


def test_embeddings_request_to_a_reranker_names_the_rerank_endpoint(server, secrets) -> None:  # noqa: ANN001
    response = _post(server, "/v1/embeddings", {"model": "ce", "input": "hello"}, secrets["all"])
    assert response.status_code == 400
    assert "/v1/rerank" in response.json()["error"]["message"]


def test_rerank_request_to_an_embedding_model_names_the_embeddings_endpoint(server, secrets) -> None:  # noqa: ANN001
    response = _post(
        server, "/v1/rerank", {"model": "embedder", "query": QUERY, "documents": ["a"]}, secrets["all"]
    )
    assert response.status_code == 400
    assert "/v1/embeddings" in response.json()["message"]


def test_query_that_fills_the_window_is_refused_naming_the_query(server, secrets) -> None:  # noqa: ANN001
    body = {"model": "ce", "query": "word " * 600, "documents": ["a short document"]}
    response = _post(server, "/v1/rerank", body, secrets["all"])
    assert response.status_code == 400 and "query" in response.json()["message"]


def test_long_document_is_truncated_on_the_document_side(server, models, secrets) -> None:  # noqa: ANN001
    long = DOCUMENTS[0] + " filler" * 800
    answer = _post(
        server, "/v1/rerank", {"model": "ce", "query": QUERY, "documents": [long]}, secrets["all"]
    ).json()
    tokenizer = transformers.AutoTokenizer.from_pretrained(models["ce"])
    ids = tokenizer(QUERY, long, truncation="only_second", max_length=512, return_tensors="pt")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(models["ce"]).eval()
    with torch.inference_mode():
        expected = torch.sigmoid(model(**ids).logits[0, 0]).item()
    assert answer["results"][0]["relevance_score"] == pytest.approx(expected, abs=1e-4)


def test_thousand_documents_take_many_model_calls(server, secrets) -> None:  # noqa: ANN001
    documents = [f"document number {i} about {DOCUMENTS[i % 5]}" for i in range(1000)]
    calls_before = metric(server, "keepwarm_batch_rows_count", "ce")
    answer = _post(
        server, "/v1/rerank", {"model": "ce", "query": QUERY, "documents": documents}, secrets["all"]
    )
    calls = metric(server, "keepwarm_batch_rows_count", "ce") - calls_before
    assert answer.status_code == 200 and len(answer.json()["results"]) == 1000
    assert calls >= answer.json()["usage"]["total_tokens"] / BUDGET  # no call above the token budget


def test_key_may_rerank_only_with_its_models(server, secrets) -> None:  # noqa: ANN001
    response = _post(
        server, "/v1/rerank", {"model": "qwen", "query": QUERY, "documents": ["a"]}, secrets["ce-only"]
    )
    assert response.status_code == 403 and "qwen" in response.json()["message"]


# Every route that answers through Serving.answer (a key seen before is read again with the usage).
METERED_ROUTES = {
    "/v1/embeddings": {"model": "embedder", "input": "hello"},
    "/v2/embed": {"model": "embedder", "texts": ["hello"], "input_type": "search_document"},
    "/v1/embed": {"model": "embedder", "texts": ["hello"]},
    "/embed": {"model": "embedder", "inputs": "hello"},
    "/v1/rerank": {"model": "ce", "query": QUERY, "documents": DOCUMENTS[:2]},
    "/v2/rerank": {"model": "ce", "query": QUERY, "documents": DOCUMENTS[:2]},
    "/rerank": {"model": "ce", "query": QUERY, "texts": DOCUMENTS[:2]},
    "/v1/classify": {"model": "clf", "input": ["hello"]},
    "/predict": {"model": "clf", "inputs": "hello"},
}


def _requests_metered(server: RunningServer, name: str, admin: str) -> int:
    report = httpx.get(
        f"{server.url}/admin/usage", params={"key": name}, headers={"Authorization": f"Bearer {admin}"}
    ).json()
    return report["total"]["requests"]


@pytest.mark.parametrize("path", list(METERED_ROUTES))
def test_a_seen_key_revoked_or_changed_takes_effect_on_its_next_request(server, secrets, path) -> None:  # noqa: ANN001
    """A key is read again before any answer: revoked, 401 (even for a bad body); narrowed, 403; unmetered."""
    keys = KeyStore(Database.in_data_dir(server.data_dir))
    body = METERED_ROUTES[path]
    names = {kind: f"recheck-{kind}-{path}" for kind in ("revoked", "bad-body", "narrowed")}
    secret = {kind: create_key(server.data_dir, name) for kind, name in names.items()}
    for kind in names:
        assert _post(server, path, body, secret[kind]).status_code == 200  # the key is now seen
    for kind in ("revoked", "bad-body"):
        keys.revoke(names[kind])
    keys.update(names["narrowed"], models=("qwen",), rpm=None, tpm=None)

    revoked = _post(server, path, body, secret["revoked"])
    assert revoked.status_code == 401 and "Incorrect API key" in revoked.text
    bad_body = _post(server, path, {"model": body["model"]}, secret["bad-body"])
    assert bad_body.status_code == 401 and "Incorrect API key" in bad_body.text
    narrowed = _post(server, path, body, secret["narrowed"])
    assert narrowed.status_code == 403 and body["model"] in narrowed.text
    assert _post(server, path, body, secret["revoked"]).status_code == 401  # and stays refused
    for name in names.values():
        assert _requests_metered(server, name, secrets["admin"]) == 1  # only the first, answered request


def test_a_seen_keys_new_limits_apply_to_its_next_request(server, secrets) -> None:  # noqa: ANN001
    """A changed rate limit is applied to the request that finds it, not one request later."""
    keys = KeyStore(Database.in_data_dir(server.data_dir))
    secret = create_key(server.data_dir, "recheck-limits")
    body = METERED_ROUTES["/v1/embeddings"]
    assert _post(server, "/v1/embeddings", body, secret).headers.get("x-ratelimit-limit-requests") is None
    keys.update("recheck-limits", models=None, rpm=7, tpm=None)
    answer = _post(server, "/v1/embeddings", body, secret)
    assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "7"
    assert answer.headers["x-ratelimit-remaining-requests"] == "6"
    assert _requests_metered(server, "recheck-limits", secrets["admin"]) == 2


def test_alias_and_expected_version_work_as_for_embeddings(server, secrets) -> None:  # noqa: ANN001
    body = {"model": "ce-alias", "query": QUERY, "documents": ["a"]}
    version = _post(server, "/v1/rerank", body, secrets["all"]).headers["x-model-version"]
    assert (
        _post(server, "/v1/rerank", body, secrets["all"], **{"X-Expect-Model-Version": version}).status_code
        == 200
    )
    conflict = _post(server, "/v1/rerank", body, secrets["all"], **{"X-Expect-Model-Version": "0" * 12})
    assert conflict.status_code == 409
    pinned = _post(server, "/v1/rerank", {**body, "model": f"ce@{version}"}, secrets["all"])
    assert pinned.status_code == 200


def test_models_list_shows_each_models_task(server, secrets) -> None:  # noqa: ANN001
    models = httpx.get(f"{server.v1}/models", headers={"Authorization": f"Bearer {secrets['all']}"}).json()
    tasks = {m["id"]: m["task"] for m in models["data"]}
    assert tasks == {"ce": "rerank", "clf": "classify", "qwen": "rerank", "embedder": "embed"}


def test_reranks_are_metered_with_pair_tokens_and_cost(server, secrets) -> None:  # noqa: ANN001
    key = create_key(server.data_dir, "metered-rerank")
    answer = _post(
        server, "/v1/rerank", {"model": "qwen", "query": QUERY, "documents": DOCUMENTS}, key
    ).json()
    report = httpx.get(
        f"{server.url}/admin/usage",
        params={"key": "metered-rerank"},
        headers={"Authorization": f"Bearer {secrets['admin']}"},
    ).json()
    assert report["total"]["tokens"] == answer["usage"]["total_tokens"]
    assert report["total"]["cost"] == pytest.approx(answer["usage"]["total_tokens"] * 2e-6)


def test_metrics_count_requests_by_task(server, secrets) -> None:  # noqa: ANN001
    before = metric(server, "keepwarm_task_requests_total", "clf")
    _post(server, "/v1/classify", {"model": "clf", "input": "hello"}, secrets["all"])
    assert metric(server, "keepwarm_task_requests_total", "clf") == before + 1
    assert 'task="classify"' in httpx.get(f"{server.url}/metrics").text


def test_batch_api_runs_rerank_lines_as_the_online_route_answers_them(server, secrets) -> None:  # noqa: ANN001
    client = openai.OpenAI(api_key=secrets["all"], base_url=server.v1)
    bodies = [
        {"model": "ce", "query": QUERY, "documents": DOCUMENTS, "top_n": 2},
        {"model": "ce", "query": "bananas", "documents": DOCUMENTS[3:], "return_documents": True},
    ]
    lines = [request_line(f"rerank-{n}", body, url="/v1/rerank") for n, body in enumerate(bodies)]
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/rerank", completion_window="24h"
    )
    finished = wait_finished(client, batch.id)
    assert finished.status == "completed" and finished.request_counts.completed == 2
    answers = {
        line["custom_id"]: line["response"]["body"] for line in result_lines(client, finished.output_file_id)
    }
    for n, body in enumerate(bodies):
        online = _post(server, "/v1/rerank", body, secrets["all"]).json()["results"]
        offline = answers[f"rerank-{n}"]["results"]
        assert [r["index"] for r in offline] == [r["index"] for r in online]
        assert [r.get("document") for r in offline] == [r.get("document") for r in online]
        assert [r["relevance_score"] for r in offline] == pytest.approx(
            [r["relevance_score"] for r in online]
        )
