"""The Cohere, text-embeddings-inference and Infinity dialects, through the clients that speak them."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from helpers import MODEL, assert_same_vectors
from helpers.outputs import calibration_ranges

from keepwarm.outputs.compress import quantize

DOCS = [
    "keepwarm serves embeddings behind an OpenAI-compatible API.",
    "Vectors from two different models must never share an index.",
    "Längere Texte mit Umlauten und 日本語 work too.",
]


@pytest.fixture(scope="module")
def cohere_v2(server):  # noqa: ANN001, ANN201
    import cohere

    return cohere.ClientV2(api_key="unused", base_url=server.url)


def test_cohere_sdk_v2_float_embeddings_are_the_models_vectors(cohere_v2, reference) -> None:  # noqa: ANN001
    response = cohere_v2.embed(
        texts=DOCS, model=MODEL, input_type="search_document", embedding_types=["float"]
    )
    assert_same_vectors(response.embeddings.float_, reference.encode(DOCS))
    assert response.texts == DOCS
    assert response.meta.billed_units.input_tokens > 0


def test_cohere_sdk_v2_int8_and_binary_equal_quantize_embeddings_with_the_versions_ranges(
    cohere_v2, server
) -> None:  # noqa: ANN001
    response = cohere_v2.embed(
        texts=DOCS, model=MODEL, input_type="search_query", embedding_types=["float", "int8", "binary"]
    )
    from sentence_transformers.quantization import quantize_embeddings

    floats = np.asarray(response.embeddings.float_, dtype=np.float32)
    ranges = calibration_ranges(server.data_dir, MODEL)
    assert np.array_equal(response.embeddings.int8, quantize_embeddings(floats, "int8", ranges=ranges))
    assert np.array_equal(response.embeddings.binary, quantize_embeddings(floats, "binary"))
    assert np.array_equal(response.embeddings.binary, quantize(floats, "binary"))


def test_cohere_errors_are_the_sdks_exceptions(cohere_v2) -> None:  # noqa: ANN001
    import cohere

    with pytest.raises(cohere.NotFoundError) as raised:
        cohere_v2.embed(texts=DOCS, model="no-such", input_type="search_query", embedding_types=["float"])
    assert "no-such" in raised.value.body["message"]
    with pytest.raises(cohere.BadRequestError) as raised:
        cohere_v2.embed(texts=DOCS, model=MODEL, input_type="search_query", embedding_types=["int4"])
    assert "embedding_types" in raised.value.body["message"]


def test_cohere_truncate_none_refuses_end_and_start_cut_absent_is_end(server, reference) -> None:  # noqa: ANN001
    long = "alpha " * 400 + "omega"
    url = f"{server.url}/v2/embed"
    base = {"model": MODEL, "texts": [long], "input_type": "search_document", "embedding_types": ["float"]}
    refused = httpx.post(url, json=base | {"truncate": "NONE"})
    assert refused.status_code == 400 and set(refused.json()) == {"id", "message"}
    end = httpx.post(url, json=base | {"truncate": "END"}).json()["embeddings"]["float"]
    assert_same_vectors(end, reference.encode([long]))
    start = httpx.post(url, json=base | {"truncate": "START"}).json()["embeddings"]["float"]
    ids = reference.tokenizer(long, add_special_tokens=False)["input_ids"][-254:]
    tail = reference.tokenizer.decode(ids)
    assert_same_vectors(start, reference.encode([tail]))
    unsaid = httpx.post(url, json=base).json()["embeddings"]["float"]  # Cohere's API: absent is END
    assert_same_vectors(unsaid, end)
    openai_route = httpx.post(f"{server.v1}/embeddings", json={"model": MODEL, "input": [long]})
    assert openai_route.status_code == 400  # OpenAI's API refuses, and so does that route


def test_cohere_sdk_v2_content_inputs_embed_as_the_same_texts(cohere_v2, reference) -> None:  # noqa: ANN001
    from cohere import EmbedInput, TextEmbedContent

    parts = ["Title: keepwarm", "Body: one service, many dialects."]
    inputs = [EmbedInput(content=[TextEmbedContent(text=doc)]) for doc in DOCS]
    inputs.append(EmbedInput(content=[TextEmbedContent(text=part) for part in parts]))
    texts = [*DOCS, "\n".join(parts)]  # an input's text parts, one per line
    kwargs = {"model": MODEL, "input_type": "search_document", "embedding_types": ["float", "int8"]}
    via_inputs = cohere_v2.embed(inputs=inputs, **kwargs)
    via_texts = cohere_v2.embed(texts=texts, **kwargs)
    assert_same_vectors(via_inputs.embeddings.float_, reference.encode(texts))
    assert np.array_equal(via_inputs.embeddings.float_, via_texts.embeddings.float_)
    assert np.array_equal(via_inputs.embeddings.int8, via_texts.embeddings.int8)
    assert via_inputs.texts == texts
    assert via_inputs.meta.billed_units.input_tokens == via_texts.meta.billed_units.input_tokens


def test_cohere_images_are_refused_naming_text_as_served(cohere_v2, server) -> None:  # noqa: ANN001
    import cohere
    from cohere import EmbedImageUrl, EmbedInput, ImageUrlEmbedContent, TextEmbedContent

    image = ImageUrlEmbedContent(image_url=EmbedImageUrl(url="data:image/png;base64,iVBORw0KGgo="))
    mixed = [EmbedInput(content=[TextEmbedContent(text="a chart"), image])]
    with pytest.raises(cohere.BadRequestError) as raised:
        cohere_v2.embed(inputs=mixed, model=MODEL, input_type="search_document", embedding_types=["float"])
    assert "inputs[0].content[1] is an image_url part" in raised.value.body["message"]
    assert "text only" in raised.value.body["message"]
    url, base = f"{server.url}/v2/embed", {"model": MODEL, "input_type": "search_document"}
    refused = [
        base | {"images": ["data:image/png;base64,iVBORw0KGgo="]},
        base | {"texts": ["a"], "input_type": "image"},
        base | {"texts": ["a"], "inputs": [{"content": [{"type": "text", "text": "a"}]}]},
        base,
        base | {"inputs": [{"content": [{"type": "video", "video": "x"}]}]},
        base | {"inputs": [{"content": []}]},
    ]
    for body in refused:
        answer = httpx.post(url, json=body)
        assert answer.status_code == 400 and set(answer.json()) == {"id", "message"}, body
    assert "text only" in httpx.post(url, json=refused[0]).json()["message"]
    assert "exactly one of 'texts' or 'inputs'" in httpx.post(url, json=refused[2]).json()["message"]


def test_cohere_output_dimension_without_matryoshka_sizes_is_only_the_models_own(
    cohere_v2, reference
) -> None:  # noqa: ANN001
    import cohere

    kwargs = {"texts": DOCS, "model": MODEL, "input_type": "search_document", "embedding_types": ["float"]}
    full = cohere_v2.embed(output_dimension=384, **kwargs)
    assert_same_vectors(full.embeddings.float_, reference.encode(DOCS))
    with pytest.raises(cohere.BadRequestError) as raised:
        cohere_v2.embed(output_dimension=128, **kwargs)
    assert "must be one of [384]" in raised.value.body["message"]


def test_cohere_max_tokens_cuts_each_input_as_truncate_says(cohere_v2, reference) -> None:  # noqa: ANN001
    import cohere

    text = " ".join(DOCS * 3)
    ids = reference.tokenizer(text, add_special_tokens=False)["input_ids"]
    kwargs = {"texts": [text], "model": MODEL, "input_type": "search_document", "embedding_types": ["float"]}
    end = cohere_v2.embed(max_tokens=20, truncate="END", **kwargs)  # 18 of the text's tokens, [CLS] and [SEP]
    assert_same_vectors(end.embeddings.float_, reference.encode([reference.tokenizer.decode(ids[:18])]))
    assert end.meta.billed_units.input_tokens == 20
    start = cohere_v2.embed(max_tokens=20, truncate="START", **kwargs)
    assert_same_vectors(start.embeddings.float_, reference.encode([reference.tokenizer.decode(ids[-18:])]))
    with pytest.raises(cohere.BadRequestError) as raised:
        cohere_v2.embed(max_tokens=20, truncate="NONE", **kwargs)
    assert "20" in raised.value.body["message"]
    above = cohere_v2.embed(max_tokens=100_000, truncate="NONE", **kwargs | {"texts": DOCS})
    assert_same_vectors(above.embeddings.float_, reference.encode(DOCS))
    with pytest.raises(cohere.BadRequestError) as raised:
        cohere_v2.embed(max_tokens=2, truncate="END", **kwargs)
    assert "max_tokens must be above 2" in raised.value.body["message"]


def test_cohere_billed_input_tokens_are_keepwarms_usage(server, reference) -> None:  # noqa: ANN001
    tokens = sum(len(reference.tokenizer(doc)["input_ids"]) for doc in DOCS)
    openai = httpx.post(f"{server.v1}/embeddings", json={"model": MODEL, "input": DOCS}).json()
    assert openai["usage"]["prompt_tokens"] == tokens
    inputs = [{"content": [{"type": "text", "text": doc}]} for doc in DOCS]
    for path, source in [
        ("/v2/embed", {"texts": DOCS}),
        ("/v2/embed", {"inputs": inputs}),
        ("/v1/embed", {"texts": DOCS}),
    ]:
        answer = httpx.post(f"{server.url}{path}", json={"model": MODEL, **source}).json()
        assert answer["meta"]["billed_units"]["input_tokens"] == tokens, (path, source)


def test_langchain_cohere_embeddings(server, reference) -> None:  # noqa: ANN001
    from langchain_cohere import CohereEmbeddings

    embeddings = CohereEmbeddings(model=MODEL, cohere_api_key="unused", base_url=server.url, max_retries=0)
    assert_same_vectors(embeddings.embed_documents(DOCS), reference.encode(DOCS))
    assert_same_vectors([embeddings.embed_query(DOCS[0])], reference.encode(DOCS[:1]))


def test_haystack_tei_embedder(server, reference) -> None:  # noqa: ANN001
    from haystack.components.embedders import HuggingFaceAPITextEmbedder
    from haystack.utils import Secret

    embedder = HuggingFaceAPITextEmbedder(
        api_type="text_embeddings_inference",
        api_params={"url": server.url},
        token=Secret.from_token("unused"),
    )
    assert_same_vectors([embedder.run(text=DOCS[0])["embedding"]], reference.encode(DOCS[:1]))


def test_llamaindex_text_embeddings_inference(server, reference) -> None:  # noqa: ANN001
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embedder = TextEmbeddingsInference(model_name=MODEL, base_url=server.url, embed_batch_size=2)
    assert_same_vectors(embedder.get_text_embedding_batch(DOCS), reference.encode(DOCS))


def test_tei_tokenize_decode_and_info(server, reference) -> None:  # noqa: ANN001
    tokens = httpx.post(f"{server.url}/tokenize", json={"inputs": ["hello world"]})
    assert tokens.headers["x-model-version"]
    row = tokens.json()[0]
    assert [t["id"] for t in row] == reference.tokenizer("hello world")["input_ids"]
    assert row[1] == {"id": row[1]["id"], "text": "hello", "special": False, "start": 0, "stop": 5}
    decoded = httpx.post(f"{server.url}/decode", json={"ids": [t["id"] for t in row]}).json()
    assert decoded == ["hello world"]
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_id"] == MODEL and info["max_input_length"] == 256


def test_tei_errors_use_teis_envelope_and_statuses(server) -> None:  # noqa: ANN001
    empty = httpx.post(f"{server.url}/embed", json={"inputs": []})
    assert empty.status_code == 422 and empty.json()["error_type"] == "Validation"
    long = httpx.post(f"{server.url}/embed", json={"inputs": "word " * 600, "truncate": False})
    assert long.status_code == 413 and set(long.json()) == {"error", "error_type"}


def test_tei_normalize_false_answers_the_pooled_vectors_before_normalize(server, reference) -> None:  # noqa: ANN001
    from huggingface_hub import InferenceClient
    from sentence_transformers import SentenceTransformer

    assert type(reference[-1]).__name__ == "Normalize"  # the model's pipeline ends with Normalize
    pooled = SentenceTransformer(modules=list(reference)[:-1], device="cpu").encode(DOCS)
    client = InferenceClient(model=server.url, token="unused")
    raw = np.stack([client.feature_extraction(text, normalize=False).reshape(-1) for text in DOCS])
    assert_same_vectors(raw, pooled)  # the served runtime's precision: compared by direction and length
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), np.linalg.norm(pooled, axis=1), rtol=5e-3)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    unit = client.feature_extraction(DOCS[0]).reshape(1, -1)
    assert_same_vectors(unit, reference.encode(DOCS[:1]))
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    body = {"inputs": DOCS[0], "normalize": False, "dimensions": 64}
    cut = np.asarray(httpx.post(f"{server.url}/embed", json=body).json())
    assert_same_vectors(cut, pooled[:1, :64])
    assert np.linalg.norm(cut) == pytest.approx(np.linalg.norm(pooled[0, :64]), rel=5e-3)


def test_litellm_infinity_provider(server, reference, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no price list download
    import litellm

    response = litellm.embedding(model=f"infinity/{MODEL}", input=DOCS, api_base=server.url, api_key="unused")
    assert_same_vectors([item["embedding"] for item in response.data], reference.encode(DOCS))
    models = httpx.get(f"{server.url}/models").json()
    assert MODEL in [model["id"] for model in models["data"]]


def test_every_dialect_answers_with_the_model_version(server) -> None:  # noqa: ANN001
    answers = [
        httpx.post(f"{server.url}/v2/embed", json={"model": MODEL, "texts": ["a"], "truncate": "END"}),
        httpx.post(f"{server.url}/v1/embed", json={"model": MODEL, "texts": ["a"]}),
        httpx.post(f"{server.url}/embed", json={"inputs": "a"}),
        httpx.post(f"{server.url}/embeddings", json={"model": MODEL, "input": "a"}),
        httpx.get(f"{server.url}/info"),
    ]
    versions = {answer.headers["x-model-version"] for answer in answers}
    assert len(versions) == 1 and all(answer.status_code == 200 for answer in answers)


def test_openai_output_dtype_int8_in_base64_is_the_quantized_bytes(server) -> None:  # noqa: ANN001
    import base64

    url = f"{server.v1}/embeddings"
    floats = httpx.post(url, json={"model": MODEL, "input": DOCS}, timeout=60).json()["data"]
    body = {"model": MODEL, "input": DOCS, "output_dtype": "int8", "encoding_format": "base64"}
    packed = httpx.post(url, json=body, timeout=60).json()["data"]
    vectors = np.asarray([item["embedding"] for item in floats], dtype=np.float32)
    expected = quantize(vectors, "int8", calibration_ranges(server.data_dir, MODEL))
    actual = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype=np.int8) for item in packed])
    assert np.array_equal(actual, expected)
