"""Cohere's embed API: `POST /v2/embed` and `/v1/embed`, as the `cohere` SDK and LangChain call them.

Request: `model`, `texts` or v2's `inputs` (content parts), `input_type`, `embedding_types`,
`truncate` (NONE | START | END), `max_tokens`, `output_dimension`. `input_type` picks the
model's prompt of the same meaning (search_query → `query`, search_document → `document`,
classification and clustering by name) and no prompt where the model has none. keepwarm's
models read text only, so image parts, `images` and `input_type: image` are refused in
Cohere's envelope, naming what is served. Answers come in Cohere's shape, errors in
Cohere's envelope; every other step is the shared embed call (api/serving.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from starlette.responses import Response

from keepwarm.api.auth import Auth
from keepwarm.api.envelopes import COHERE, speaks
from keepwarm.api.middleware import record_of
from keepwarm.api.responses import JSONResponse, base64_rows
from keepwarm.api.schemas import MAX_INPUTS, parse_json_body
from keepwarm.api.serving import Serving
from keepwarm.engine import Embeddings, EmbedOptions
from keepwarm.errors import InvalidRequest
from keepwarm.store import ApiKey

EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
_PROMPTS = {
    "search_query": "query",
    "search_document": "document",
    "classification": "classification",
    "clustering": "clustering",
}
_TRUNCATE = {"NONE": False, "END": True, "START": True}


InputType = Literal["search_query", "search_document", "classification", "clustering", "image"]
_TEXT_ONLY = (
    "keepwarm's models embed text only: send `texts`, or `inputs` whose content parts are "
    '{"type": "text", "text": "..."}'
)


class _Text(BaseModel):
    type: Literal["text"]
    text: StrictStr = Field(min_length=1)


class _Image(BaseModel):
    """Parsed only to be refused with a clear message (not a schema error, not a 500)."""

    type: Literal["image_url"]


class _Input(BaseModel):
    content: list[Annotated[_Text | _Image, Field(discriminator="type")]] = Field(min_length=1)

    @property
    def text(self) -> str:
        """The input's text parts as one text, each part on its own line."""
        return "\n".join(part.text for part in self.content if isinstance(part, _Text))


class CohereEmbedRequest(BaseModel):
    """Cohere's embed body (v1 and v2 alike). Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(min_length=1)
    texts: list[StrictStr] | None = Field(default=None, min_length=1, max_length=MAX_INPUTS)
    inputs: list[_Input] | None = Field(default=None, min_length=1, max_length=MAX_INPUTS)
    images: list[Any] | None = None
    input_type: InputType | None = None
    embedding_types: list[EmbeddingType] | None = Field(default=None, min_length=1)
    truncate: Literal["NONE", "START", "END"] | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    output_dimension: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> CohereEmbedRequest:
        self._refuse_images()
        if (self.texts is None) == (self.inputs is None):
            raise InvalidRequest("send exactly one of 'texts' or 'inputs'", param="texts")
        for index, text in enumerate(self.texts or []):
            if not text:
                raise InvalidRequest(f"texts[{index}] must not be an empty string", param="texts")
        return self

    def _refuse_images(self) -> None:
        if self.images is not None:
            raise InvalidRequest(f"'images' is not supported: {_TEXT_ONLY}", param="images")
        if self.input_type == "image":
            raise InvalidRequest(f"input_type 'image' is not supported: {_TEXT_ONLY}", param="input_type")
        for index, item in enumerate(self.inputs or []):
            for part, content in enumerate(item.content):
                if isinstance(content, _Image):
                    message = f"inputs[{index}].content[{part}] is an image_url part: {_TEXT_ONLY}"
                    raise InvalidRequest(message, param="inputs")

    @property
    def text_list(self) -> list[str]:
        """The texts to embed: `texts`, or each input's text parts as one text."""
        if self.texts is not None:
            return self.texts
        return [item.text for item in self.inputs or []]

    def options(self, expect_version: str | None) -> EmbedOptions:
        types = self.embedding_types or ["float"]
        return EmbedOptions(
            truncate=_TRUNCATE[self.truncate] if self.truncate else None,
            truncate_unless_configured=True,  # Cohere's API: absent means END
            truncate_from="start" if self.truncate == "START" else "end",
            dimensions=self.output_dimension,
            matryoshka_only=True,
            max_tokens=self.max_tokens,
            prompt_name=_PROMPTS.get(self.input_type or ""),
            optional_prompt=True,
            expect_version=expect_version,
            output_dtypes=tuple(t for t in types if t != "base64"),
        )


def _embeddings_by_type(result: Embeddings, types: list[str]) -> dict[str, Any]:
    by_type: dict[str, Any] = {}
    for kind in dict.fromkeys(types):
        if kind == "base64":
            by_type[kind] = base64_rows(np.ascontiguousarray(result.vectors, dtype=np.float32))
        else:
            by_type[kind] = list(result.compressed(kind))
    return by_type


def _meta(result: Embeddings, version: str) -> dict[str, Any]:
    return {
        "api_version": {"version": version},
        "billed_units": {"input_tokens": result.tokens},
        "model_version": result.model.short_version,  # extension, as in keepwarm's other dialects
    }


def cohere_router(call: Serving, auth: Auth) -> APIRouter:
    """`/v2/embed` and `/v1/embed` over the shared embed call."""
    router = APIRouter(dependencies=[speaks(COHERE)], tags=["Cohere"])

    async def embed(request: Request, key: ApiKey, api_version: str) -> Response:
        body = parse_json_body(CohereEmbedRequest, await call.body(request, key))
        texts = body.text_list
        result = await call.embed(
            request, key, body.model, texts, body.options(call.expected_version(request))
        )
        answer: dict[str, Any] = {"id": record_of(request).id, "texts": texts}
        if api_version == "1" and body.embedding_types is None:
            answer |= {"response_type": "embeddings_floats", "embeddings": list(result.vectors)}
        else:
            embeddings = _embeddings_by_type(result, body.embedding_types or ["float"])
            answer |= {"response_type": "embeddings_by_type", "embeddings": embeddings}
        answer["meta"] = _meta(result, api_version)
        return JSONResponse(answer, headers=call.headers(request, result))

    @router.post("/v2/embed")
    async def embed_v2(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> Response:
        """Embed texts (Cohere's `POST /v2/embed`)."""
        return await embed(request, key, "2")

    @router.post("/v1/embed")
    async def embed_v1(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> Response:
        """Embed texts (Cohere's `POST /v1/embed`)."""
        return await embed(request, key, "1")

    return router
