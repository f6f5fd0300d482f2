"""Rerank dialects: Cohere's `/v1/rerank` and `/v2/rerank` (Jina's variant too) and TEI's `/rerank`.

Cohere's shape is the one LiteLLM, vLLM and Infinity follow: `{model, query, documents,
top_n, return_documents, max_tokens_per_doc}` → `{id, results: [{index, relevance_score,
document?}], meta: {billed_units}, usage}`, best first. Documents are strings or objects
with `text` (Jina, Cohere v1), or objects ranked on `rank_fields` (Cohere v1). Cohere
truncates long documents rather than refusing them, so this dialect always truncates the
document side (engine/pairs.py). Errors are Cohere's `{id, message}`.

text-embeddings-inference's `/rerank` takes `{query, texts, raw_scores, return_text,
truncate, truncation_direction}` and answers `[{index, score, text?}]`, best first; TEI
serves one model and its clients send none, so a body without `model` goes to the first
reranker the key may use. Errors are TEI's `{error, error_type}`.

Scores are the model's relevance scores after its activation (CrossEncoder.predict);
`raw_scores` gives the logits.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from keepwarm.api.auth import Auth
from keepwarm.api.envelopes import COHERE, TEI, speaks
from keepwarm.api.middleware import record_of
from keepwarm.api.responses import JSONResponse
from keepwarm.api.schemas import parse_json_body
from keepwarm.api.serving import Serving
from keepwarm.engine import ONLINE, ScoreOptions, Scores
from keepwarm.engine.types import Admission, Authorization
from keepwarm.errors import InvalidRequest
from keepwarm.store import ApiKey

MAX_DOCUMENTS = 10_000
_DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere bills one search unit per query and 100 documents


class CohereRerankRequest(BaseModel):
    """Cohere's rerank request (v1 and v2), Jina's variant, and keepwarm's `expect_version`."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(min_length=1)
    query: StrictStr = Field(min_length=1)
    documents: list[StrictStr | dict[str, Any]] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: StrictInt | None = Field(default=None, ge=1)
    return_documents: StrictBool = False
    max_tokens_per_doc: StrictInt | None = Field(default=None, ge=1)
    rank_fields: list[StrictStr] | None = None
    expect_version: StrictStr | None = None

    def texts(self) -> list[str]:
        """Each document as the text the model reads."""
        return [_document_text(d, i, self.rank_fields) for i, d in enumerate(self.documents)]

    def options(self, expect_version: str | None = None, priority: int = ONLINE) -> ScoreOptions:
        return ScoreOptions(
            truncate=True,
            max_document_tokens=self.max_tokens_per_doc,
            priority=priority,
            expect_version=self.expect_version or expect_version,
        )


class TeiRerankRequest(BaseModel):
    """text-embeddings-inference's rerank request; `model` is keepwarm's addition."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(default=None, min_length=1)
    query: StrictStr = Field(min_length=1)
    texts: list[StrictStr] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"

    def options(self, expect_version: str | None) -> ScoreOptions:
        return ScoreOptions(
            truncate=self.truncate,
            truncate_start=self.truncation_direction.lower() == "left",
            expect_version=expect_version,
        )


def _document_text(document: str | dict[str, Any], index: int, rank_fields: list[str] | None) -> str:
    if isinstance(document, str):
        text = document
    elif rank_fields:
        missing = [f for f in rank_fields if not isinstance(document.get(f), str)]
        if missing:
            raise InvalidRequest(
                f"documents[{index}] has no text field '{missing[0]}' named in rank_fields",
                param=f"documents[{index}]",
            )
        text = "\n".join(f"{field}: {document[field]}" for field in rank_fields)
    elif isinstance(document.get("text"), str):
        text = document["text"]
    else:
        raise InvalidRequest(
            f"documents[{index}] must be a string or an object with a string 'text'",
            param=f"documents[{index}]",
        )
    if not text:
        raise InvalidRequest(f"documents[{index}] must not be empty", param=f"documents[{index}]")
    return text


def ranking(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Document indexes best first (ties in input order), cut to `top_n`."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order[:top_n] if top_n is not None else order


def cohere_rerank_body(result: Scores, body: CohereRerankRequest, request_id: str) -> dict[str, Any]:
    """Cohere's rerank response (which Jina's clients read too), with keepwarm's version extension.

    HTTP routes and `/v1/rerank` batch lines alike.
    """
    texts = body.texts() if body.return_documents else []
    results = []
    for index in ranking(result.scores, body.top_n):
        entry: dict[str, Any] = {"index": index, "relevance_score": float(result.scores[index])}
        if body.return_documents:
            entry["document"] = {"text": texts[index]}
        results.append(entry)
    units = math.ceil(len(body.documents) / _DOCUMENTS_PER_SEARCH_UNIT)
    return {
        "id": request_id,
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": units}},
        "usage": {"total_tokens": result.tokens},  # Jina's field
        "model": body.model,
        "model_version": result.model.short_version,
    }


def _tei_body(result: Scores, body: TeiRerankRequest) -> list[dict[str, Any]]:
    values = result.raw if body.raw_scores else result.scores
    answer = []
    for index in ranking(result.scores):
        entry: dict[str, Any] = {"index": index, "score": float(values[index])}
        if body.return_text:
            entry["text"] = body.texts[index]
        answer.append(entry)
    return answer


def rerank_routers(serving: Serving, auth: Auth) -> list[APIRouter]:
    """Cohere's routes (in Cohere's envelope) and TEI's route (in TEI's)."""
    cohere = APIRouter(dependencies=[speaks(COHERE)], tags=["rerank"])
    tei = APIRouter(dependencies=[speaks(TEI)], tags=["rerank"])

    async def rerank_cohere(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> JSONResponse:
        """Rerank documents against a query (Cohere's `POST /v1/rerank` and `/v2/rerank`, Jina's)."""
        body = parse_json_body(CohereRerankRequest, await serving.body(request, key))
        options = body.options(request.headers.get("x-expect-model-version"))

        texts = body.texts()

        def call(authorize: Authorization, admit: Admission | None) -> Awaitable[Scores]:
            return serving.engine.rerank(
                body.model, body.query, texts, options, authorize=authorize, admit=admit
            )

        result = await serving.answer(request, key, body.model, call)
        content = cohere_rerank_body(result, body, record_of(request).id)
        return JSONResponse(content, headers=serving.headers(request, result))

    cohere.add_api_route("/v1/rerank", rerank_cohere, methods=["POST"])
    cohere.add_api_route("/v2/rerank", rerank_cohere, methods=["POST"])

    @tei.post("/rerank")
    async def rerank_tei(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> JSONResponse:
        """Rerank texts against a query (text-embeddings-inference's `POST /rerank`)."""
        body = parse_json_body(TeiRerankRequest, await serving.body(request, key))
        model = body.model or serving.default_model(key, "rerank")
        options = body.options(request.headers.get("x-expect-model-version"))

        def call(authorize: Authorization, admit: Admission | None) -> Awaitable[Scores]:
            return serving.engine.rerank(
                model, body.query, body.texts, options, authorize=authorize, admit=admit
            )

        result = await serving.answer(request, key, model, call)
        return JSONResponse(_tei_body(result, body), headers=serving.headers(request, result))

    return [cohere, tei]
