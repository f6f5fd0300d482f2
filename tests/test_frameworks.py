"""LangChain and LlamaIndex, unchanged but for base_url, get the model's real vectors."""

from __future__ import annotations

import pytest
from helpers import MODEL, assert_same_vectors

DOCS = [
    "keepwarm serves embeddings behind an OpenAI-compatible API.",
    "Vectors from two different models must never share an index.",
    "Längere Texte mit Umlauten und 日本語 work too.",
]


def test_langchain_default_sends_cl100k_token_ids_and_gets_real_vectors(
    server, reference, tiktoken_cache
) -> None:  # noqa: ANN001
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model=MODEL, base_url=server.v1, api_key="unused", max_retries=0)
    assert embeddings.check_embedding_ctx_length  # the default: token ids on the wire
    assert_same_vectors(embeddings.embed_documents(DOCS), reference.encode(DOCS))
    assert_same_vectors([embeddings.embed_query(DOCS[0])], reference.encode(DOCS[:1]))


def test_langchain_with_plain_strings(server, reference) -> None:  # noqa: ANN001
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MODEL, base_url=server.v1, api_key="unused", check_embedding_ctx_length=False, max_retries=0
    )
    assert_same_vectors(embeddings.embed_documents(DOCS), reference.encode(DOCS))


def test_langchain_long_document_with_truncate_extension(server, reference, tiktoken_cache) -> None:  # noqa: ANN001
    from langchain_openai import OpenAIEmbeddings

    long_doc = "The scheduler groups inputs of similar length. " * 80
    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=server.v1,
        api_key="unused",
        max_retries=0,
        model_kwargs={"extra_body": {"truncate": True}},
    )
    assert_same_vectors([embeddings.embed_query(long_doc)], reference.encode([long_doc]))


@pytest.mark.parametrize("batch", [1, 10])
def test_llamaindex_openai_like(server, reference, batch: int) -> None:  # noqa: ANN001
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embedder = OpenAILikeEmbedding(
        model_name=MODEL, api_base=server.v1, api_key="unused", embed_batch_size=batch, max_retries=0
    )
    documents = embedder.get_text_embedding_batch(DOCS)
    query = embedder.get_query_embedding("what must never share an index?")
    assert_same_vectors(documents, reference.encode(DOCS))
    assert_same_vectors([query], reference.encode(["what must never share an index?"]))
