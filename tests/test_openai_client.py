"""The official `openai` client against a real keepwarm server: vectors, shapes, usage."""

from __future__ import annotations

import asyncio

import numpy as np
import openai
import pytest
from helpers import MODEL, assert_same_vectors

TEXTS = ["How do I reset my password?", "def add(a, b):\n    return a + b", "ümlaut — ünicode ✓ 日本語"]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def test_default_client_call_matches_sentence_transformers(client, reference) -> None:  # noqa: ANN001
    """The client's default sends encoding_format=base64 and decodes it itself."""
    response = client.embeddings.create(model=MODEL, input=TEXTS)
    vectors = np.array([d.embedding for d in response.data])
    assert_same_vectors(vectors, reference.encode(TEXTS))


def test_base64_matches_float(client) -> None:  # noqa: ANN001
    as_float = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    as_base64 = client.embeddings.create(model=MODEL, input=TEXTS)
    # JSON carries the shortest decimal that round-trips each float32: bit-identical once read as float32
    np.testing.assert_array_equal(
        np.array([d.embedding for d in as_float.data], dtype=np.float32),
        np.array([d.embedding for d in as_base64.data], dtype=np.float32),
    )


def test_response_has_openai_shape(client, reference) -> None:  # noqa: ANN001
    response = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert response.object == "list"
    assert response.model == MODEL
    assert [d.index for d in response.data] == [0, 1, 2]
    assert all(d.object == "embedding" and len(d.embedding) == 384 for d in response.data)
    expected_tokens = int(reference.tokenize(TEXTS)["attention_mask"].sum())
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected_tokens


def test_single_string_input(client, reference) -> None:  # noqa: ANN001
    response = client.embeddings.create(model=MODEL, input="just one sentence")
    assert len(response.data) == 1
    assert_same_vectors([response.data[0].embedding], reference.encode(["just one sentence"]))


def test_dimensions_cut_and_renormalise(client, reference) -> None:  # noqa: ANN001
    response = client.embeddings.create(model=MODEL, input=TEXTS, dimensions=64)
    vectors = np.array([d.embedding for d in response.data])
    expected = reference.encode(TEXTS)[:, :64]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert vectors.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert_same_vectors(vectors, expected)


def test_native_dimensions_is_a_no_op(client) -> None:  # noqa: ANN001
    plain = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    native = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float", dimensions=384)
    assert [d.embedding for d in plain.data] == [d.embedding for d in native.data]


def test_order_is_input_order_for_mixed_lengths(client, reference, corpus) -> None:  # noqa: ANN001
    texts = corpus[:60]
    response = client.embeddings.create(model=MODEL, input=texts, extra_body={"truncate": True})
    assert [d.index for d in response.data] == list(range(60))
    assert_same_vectors([d.embedding for d in response.data], reference.encode(texts))


def test_user_and_unknown_fields_are_accepted(client) -> None:  # noqa: ANN001
    response = client.embeddings.create(
        model=MODEL, input="hello", user="user-1234", extra_body={"some_future_field": {"x": 1}}
    )
    assert len(response.data) == 1


def test_async_client(server, reference) -> None:  # noqa: ANN001
    async def run() -> list[list[float]]:
        async with openai.AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0) as client:
            responses = await asyncio.gather(
                *(client.embeddings.create(model=MODEL, input=[text]) for text in TEXTS)
            )
        return [r.data[0].embedding for r in responses]

    assert_same_vectors(asyncio.run(run()), reference.encode(TEXTS))


def test_models_list_and_retrieve(client) -> None:  # noqa: ANN001
    listed = client.models.list()
    assert [m.id for m in listed.data] == [MODEL]
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and model.owned_by == "keepwarm"
    assert isinstance(model.created, int)


def test_unknown_model_raises_not_found(client) -> None:  # noqa: ANN001
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
