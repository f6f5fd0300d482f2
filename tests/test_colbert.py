"""PyLate-layout ColBERT models: read from their files, equal to PyLate's formula, served over HTTP."""

from __future__ import annotations

import base64
import dataclasses
import json
import string
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import start_server
from helpers.colbert import pylate_reference, tiny_pylate

from keepwarm.catalog import ArtifactStore, DigestCache, directory_fingerprint, read_model_spec
from keepwarm.catalog.versions import model_version
from keepwarm.engine import EmbedOptions, Engine, EngineSettings
from keepwarm.errors import ConfigError, InvalidRequest

QUERIES = [
    "what is late interaction?",
    "short",
    "a query that runs on well past the query length of this model",
]
DOCUMENTS = [
    "Hello, world! It's a test... with punctuation; lots of it: yes.",
    "short",
    "a much longer document that the model cuts at its document length " * 3,
]
SAME_LENGTH = ["Hello, world! It's a test", "one two three four five six seven eight nine"]  # 12 tokens each
TIMEOUT = 60  # seconds: a first request waits for the model's warm-up on a busy machine
# [Q]/[D] markers added to the tokenizer, unattended expansion, two Dense modules (tanh + bias, then linear)
MARKED = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 12,
    "document_length": 20,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}
# the original ColBERT's [unused0]/[unused1] markers, attended expansion, PyLate's defaults for the rest
UNUSED = {
    "query_prefix": "[unused0]",
    "document_prefix": "[unused1]",
    "query_length": 10,
    "document_length": 16,
}
UNUSED_ATTENDING = {**UNUSED, "attend_to_expansion_tokens": True}
# no markers, no expansion (queries are cut, not padded), a skiplist of words
PLAIN = {
    "query_prefix": "",
    "document_prefix": "",
    "query_length": 8,
    "document_length": 14,
    "do_query_expansion": False,
    "skiplist_words": ["a", "the", ","],
}


@pytest.fixture(scope="module")
def colbert_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("colbert-data")


@pytest.fixture(scope="module")
def marked_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    dense = [(48, True, "tanh"), (16, False, "identity")]
    return tiny_pylate(tmp_path_factory.mktemp("marked") / "marked", model_dir, MARKED, dense, seed=5)


@pytest.fixture(scope="module")
def unused_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    dense = [(24, True, "identity")]
    return tiny_pylate(
        tmp_path_factory.mktemp("unused") / "unused", model_dir, UNUSED_ATTENDING, dense, seed=6
    )


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    return tiny_pylate(
        tmp_path_factory.mktemp("plain") / "plain", model_dir, PLAIN, [(8, False, "tanh")], seed=7
    )


def test_pylate_layout_is_read_from_its_files(marked_dir: Path, unused_dir: Path, plain_dir: Path) -> None:
    marked, unused = read_model_spec("marked", marked_dir), read_model_spec("unused", unused_dir)
    assert marked.outputs == unused.outputs == ("multivector",)
    assert marked.colbert is not None and unused.colbert is not None
    assert [(d.path, d.out_features, d.bias, d.activation) for d in marked.colbert.dense] == [
        ("1_Dense", 48, True, "tanh"),
        ("2_Dense", 16, False, "identity"),
    ]
    assert (marked.colbert.query_prefix, marked.colbert.query_length, marked.colbert.document_length) == (
        "[Q] ",
        12,
        20,
    )
    assert marked.max_tokens == 19 and marked.overflow == "truncate"  # PyLate truncates to the longer side
    assert unused.colbert.attend_to_expansion_tokens and unused.colbert.do_query_expansion  # PyLate's default
    assert unused.colbert.skiplist_words == tuple(string.punctuation)
    assert unused.colbert.dimensions == 24
    plain = read_model_spec("plain", plain_dir).colbert
    assert plain is not None and plain.skiplist_words == ("a", "the", ",")
    assert (plain.limit("query"), plain.limit("document")) == (8, 14)  # no marker takes a place


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"activation_function": "torch.nn.modules.activation.ReLU"},
            "uses activation torch.nn.modules.activation.ReLU",
        ),
        ({"use_residual": True}, "use_residual"),
    ],
)
def test_a_dense_module_keepwarm_cannot_compute_is_refused(
    change: dict, message: str, unused_dir: Path, tmp_path: Path
) -> None:
    import shutil

    copy = shutil.copytree(unused_dir, tmp_path / "changed")
    config = json.loads((copy / "1_Dense" / "config.json").read_text())
    (copy / "1_Dense" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=message):
        read_model_spec("changed", copy)


def test_the_layout_settings_are_part_of_the_model_version(marked_dir: Path) -> None:
    spec = read_model_spec("marked", marked_dir)
    assert spec.colbert is not None
    longer = dataclasses.replace(spec, colbert=dataclasses.replace(spec.colbert, query_length=13))
    attending = dataclasses.replace(
        spec, colbert=dataclasses.replace(spec.colbert, attend_to_expansion_tokens=True)
    )
    versions = {
        model_version(spec, "files"),
        model_version(longer, "files"),
        model_version(attending, "files"),
    }
    assert len(versions) == 3


def _options(side: str | None) -> EmbedOptions:
    return EmbedOptions(outputs=("multivector",), prompt_name=side)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_queries_and_documents_equal_pylates_formula(
    runtime: str, marked_dir: Path, unused_dir: Path, plain_dir: Path, colbert_data: Path
) -> None:
    specs = [
        read_model_spec(name, directory, overrides={"runtime": runtime})
        for name, directory in (("marked", marked_dir), ("unused", unused_dir), ("plain", plain_dir))
    ]
    with Engine(specs, colbert_data, EngineSettings(cache_bytes=0)) as engine:
        for spec in specs:
            queries = engine.embed_sync(spec.name, QUERIES, _options("query")).multivectors
            documents = engine.embed_sync(spec.name, DOCUMENTS, _options(None)).multivectors
            also_documents = engine.embed_sync(spec.name, DOCUMENTS, _options("document")).multivectors
            for got, expected in zip(
                queries, pylate_reference(spec.directory, QUERIES, is_query=True), strict=True
            ):
                assert got.shape == expected.shape
                np.testing.assert_allclose(got, expected, atol=1e-4)
            expanded = spec.colbert.do_query_expansion
            assert [len(q) for q in queries] == ([spec.colbert.query_length] * 3 if expanded else [7, 3, 8])
            expected_documents = pylate_reference(spec.directory, DOCUMENTS, is_query=False)
            for got, again, expected in zip(documents, also_documents, expected_documents, strict=True):
                assert got.shape == expected.shape
                np.testing.assert_allclose(got, expected, atol=1e-4)
                np.testing.assert_array_equal(got, again)
            if (
                spec.name == "marked"
            ):  # 24 tokens with the template, cut to 20 with [D]; 7 punctuation dropped
                assert documents[0].shape[0] == 13


def test_openvino_f32_equals_pylates_formula(marked_dir: Path, colbert_data: Path) -> None:
    """OpenVINO at f32 (its fp32 may run bf16, which keeps pooled vectors, not every token, to 1e-4)."""
    from keepwarm.engine.colbert import ColbertTokenizer
    from keepwarm.engine.tokenization import ModelTokenizer
    from keepwarm.engine.work import Job, WorkItem
    from keepwarm.engine.worker import kept_tokens, model_inputs
    from keepwarm.runtimes.factory import onnx_fp32_artifact
    from keepwarm.runtimes.openvino import OpenVinoRuntime

    spec = read_model_spec("marked", marked_dir)
    fingerprint = directory_fingerprint(marked_dir, DigestCache(colbert_data / "digests.json"))
    folder, artifact = onnx_fp32_artifact(spec, ArtifactStore(colbert_data), fingerprint)
    runtime = OpenVinoRuntime(spec, folder / artifact["file"], precision="f32")
    tokenizer = ModelTokenizer(spec)
    for texts, side in ((QUERIES, "query"), (DOCUMENTS, "document")):
        tokenized = ColbertTokenizer(spec, tokenizer).encode(tokenizer, texts, side=side, overflow="truncate")
        job = Job(len(texts), 0, outputs=frozenset({"multivector"}))
        items = [
            WorkItem(ids, job, n, attention=attention, keep=keep)
            for n, (ids, attention, keep) in enumerate(
                zip(tokenized.ids, tokenized.attention, tokenized.keep, strict=True)
            )
        ]
        ids, mask = model_inputs([i.ids for i in items], None, tokenizer.pad_id, [i.attention for i in items])
        rows = runtime.produce(ids, mask, frozenset({"multivector"}), kept_tokens(items, ids.shape[1]))
        expected = pylate_reference(marked_dir, texts, is_query=side == "query")
        for row, reference in zip(rows, expected, strict=True):
            np.testing.assert_allclose(row.multivector, reference, atol=1e-4)


def test_queries_and_documents_share_one_model_call_each_with_its_own_masks(
    marked_dir: Path, colbert_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests of both sides queued together run in one call: expansion masks and skiplists stay per row.

    The documents have 12 tokens, as the expanded queries do: no padding, so the call is never split for it.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from keepwarm.engine.worker import HOLD_FILE_ENV

    hold = tmp_path / "hold"
    monkeypatch.setenv(HOLD_FILE_ENV, str(hold))
    spec = read_model_spec("marked", marked_dir, overrides={"runtime": "onnx"})
    with Engine([spec], colbert_data, EngineSettings(cache_bytes=0)) as engine:
        served = engine.resolve("marked")
        calls, run = [], served.runtime.produce
        served.runtime.produce = lambda ids, *rest: calls.append(ids.shape) or run(ids, *rest)
        hold.touch()
        with ThreadPoolExecutor(2) as pool:
            queries = pool.submit(engine.embed_sync, "marked", QUERIES, _options("query"))
            documents = pool.submit(engine.embed_sync, "marked", SAME_LENGTH, _options("document"))
            while served.scheduler.queued_tokens < 5 * 12:  # both requests are queued
                time.sleep(0.01)
            hold.unlink()
            answers = {"query": queries.result(TIMEOUT), "document": documents.result(TIMEOUT)}
    assert calls == [(5, 12)]  # one call for both requests
    assert answers["document"].multivectors[0].shape[0] == 9  # its 3 punctuation tokens dropped
    for side, texts in (("query", QUERIES), ("document", SAME_LENGTH)):
        expected = pylate_reference(marked_dir, texts, is_query=side == "query")
        for got, reference in zip(answers[side].multivectors, expected, strict=True):
            np.testing.assert_allclose(got, reference, atol=1e-4)


def test_a_colbert_model_refuses_outputs_it_lacks(marked_dir: Path, colbert_data: Path) -> None:
    spec = read_model_spec("marked", marked_dir, overrides={"runtime": "onnx"})
    with (
        Engine([spec], colbert_data) as engine,
        pytest.raises(InvalidRequest, match="no dense output; it answers: multivector") as refused,
    ):
        engine.embed_sync("marked", QUERIES, EmbedOptions(prompt_name="query"))
    assert refused.value.param == "outputs"


@pytest.fixture(scope="module")
def colbert_server(colbert_data: Path, log_dir: Path, marked_dir: Path, unused_dir: Path):  # noqa: ANN201
    """A server for both tiny models; it reuses the exports the in-process tests built in `colbert_data`."""
    running = start_server(
        colbert_data, log_dir, "--model", f"marked={marked_dir}", "--model", f"unused={unused_dir}"
    )
    yield running
    running.stop()


def test_models_list_the_multivector_output_and_the_layout(colbert_server) -> None:  # noqa: ANN001
    models = {m["id"]: m for m in httpx.get(f"{colbert_server.v1}/models", timeout=TIMEOUT).json()["data"]}
    assert models["marked"]["outputs"] == ["multivector"]
    detail = httpx.get(f"{colbert_server.v1}/models/marked", timeout=TIMEOUT).json()
    text = json.dumps(detail)
    assert '"query_prefix": "[Q] "' in text and '"query_length": 12' in text
    assert detail["colbert"]["dimensions"] == 16


def test_openai_client_gets_query_and_document_token_vectors(colbert_server, marked_dir: Path) -> None:  # noqa: ANN001
    from openai import OpenAI

    client = OpenAI(base_url=colbert_server.v1, api_key="unused", max_retries=0)
    for side in ("query", "document"):
        answer = client.embeddings.create(
            model="marked",
            input=QUERIES,
            encoding_format="float",
            extra_body={"outputs": ["multivector"], "input_type": side},
        )
        expected = pylate_reference(marked_dir, QUERIES, is_query=side == "query")
        for item, reference in zip(answer.data, expected, strict=True):
            np.testing.assert_allclose(np.asarray(item.model_extra["multi_vector"]), reference, atol=1e-4)


def test_openai_route_answers_base64_matrices_with_their_shape(colbert_server, unused_dir: Path) -> None:  # noqa: ANN001
    body = {"model": "unused", "input": QUERIES, "outputs": ["multivector"], "input_type": "query"}
    answer = httpx.post(
        f"{colbert_server.v1}/embeddings", json={**body, "encoding_format": "base64"}, timeout=TIMEOUT
    )
    assert answer.status_code == 200 and answer.headers["x-model-version"]
    expected = pylate_reference(unused_dir, QUERIES, is_query=True)
    for item, reference in zip(answer.json()["data"], expected, strict=True):
        shape = item["multi_vector"]["shape"]
        assert shape == [10, 24]
        matrix = np.frombuffer(base64.b64decode(item["multi_vector"]["data"]), dtype="<f4").reshape(shape)
        np.testing.assert_allclose(matrix, reference, atol=1e-4)


def test_tei_embed_all_takes_the_side_from_prompt_name(colbert_server, marked_dir: Path) -> None:  # noqa: ANN001
    url = f"{colbert_server.url}/embed_all"
    query = httpx.post(
        url, json={"inputs": "short", "model": "marked", "prompt_name": "query"}, timeout=TIMEOUT
    )
    document = httpx.post(url, json={"inputs": DOCUMENTS[0], "model": "marked"}, timeout=TIMEOUT)
    assert query.status_code == document.status_code == 200
    np.testing.assert_allclose(
        query.json()[0], pylate_reference(marked_dir, ["short"], is_query=True)[0], atol=1e-4
    )
    expected = pylate_reference(marked_dir, DOCUMENTS[:1], is_query=False)[0]
    np.testing.assert_allclose(document.json()[0], expected, atol=1e-4)


def test_requests_for_what_the_model_lacks_are_refused_naming_its_output(colbert_server) -> None:  # noqa: ANN001
    openai = httpx.post(
        f"{colbert_server.v1}/embeddings", json={"model": "marked", "input": "a"}, timeout=TIMEOUT
    )
    assert openai.status_code == 400
    assert openai.json()["error"]["message"] == "model 'marked' has no dense output; it answers: multivector"
    sparse = httpx.post(
        f"{colbert_server.v1}/embeddings",
        json={"model": "marked", "input": "a", "outputs": ["sparse"], "input_type": "query"},
        timeout=TIMEOUT,
    )
    assert sparse.status_code == 400 and "it answers: multivector" in sparse.json()["error"]["message"]
    tei = httpx.post(f"{colbert_server.url}/embed", json={"inputs": "a", "model": "marked"}, timeout=TIMEOUT)
    assert tei.status_code == 422 and "it answers: multivector" in tei.json()["error"]
    cohere = httpx.post(
        f"{colbert_server.url}/v2/embed",
        json={"model": "marked", "texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]},
        timeout=TIMEOUT,
    )
    assert cohere.status_code == 400 and "it answers: multivector" in cohere.json()["message"]
    other_prompt = httpx.post(
        f"{colbert_server.v1}/embeddings",
        json={"model": "marked", "input": "a", "outputs": ["multivector"], "prompt_name": "passage"},
        timeout=TIMEOUT,
    )
    assert other_prompt.status_code == 400 and other_prompt.json()["error"]["param"] == "input_type"
    assert "allowed values: document, query" in other_prompt.json()["error"]["message"]
