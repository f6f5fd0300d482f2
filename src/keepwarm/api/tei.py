"""text-embeddings-inference's API: `/embed`, `/embed_sparse`, `/embed_all`, `/tokenize`, `/decode`, `/info`.

As Haystack's and LlamaIndex's TEI integrations call it: `{"inputs": str | [str],
"normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"}` answered
with a bare array of vectors, errors as `{"error", "error_type"}` (api/envelopes.py).
TEI serves one model per process and has no `model` field; here a body may name one
(`"model"`, an extension), else the first configured embedding model the caller's key
may use answers (Serving.default_model). Every embed goes through api/serving.py.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.responses import Response

from keepwarm import __version__
from keepwarm.api.auth import Auth, check_model_allowed
from keepwarm.api.envelopes import TEI, speaks
from keepwarm.api.responses import JSONResponse
from keepwarm.api.schemas import MAX_INPUTS, parse_json_body
from keepwarm.api.serving import Serving
from keepwarm.catalog import ModelSpec
from keepwarm.catalog.versions import short_version
from keepwarm.engine import Embeddings, EmbedOptions, ModelInfo
from keepwarm.errors import InvalidRequest
from keepwarm.runtimes.pooling import l2_normalize
from keepwarm.store import ApiKey


def _texts(inputs: str | list[str]) -> list[str]:
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not texts:
        raise InvalidRequest("`inputs` cannot be empty", param="inputs")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(
            f"batch size {len(texts)} > maximum allowed batch size {MAX_INPUTS}",
            param="inputs",
            code="too_many_inputs",
        )
    for index, text in enumerate(texts):
        if not text:
            raise InvalidRequest(f"inputs[{index}] must not be an empty string", param="inputs")
    return texts


class _TeiBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: StrictStr | list[StrictStr]
    model: StrictStr | None = Field(default=None, min_length=1, description="keepwarm extension")


class TeiEmbedRequest(_TeiBody):
    """TEI's `/embed` body. Unknown fields are ignored."""

    normalize: StrictBool = True
    truncate: StrictBool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    prompt_name: StrictStr | None = None
    dimensions: StrictInt | None = Field(default=None, ge=1)

    def options(self, expect_version: str | None, output: str = "dense") -> EmbedOptions:
        return EmbedOptions(
            truncate=self.truncate,
            truncate_from="start" if self.truncation_direction.lower() == "left" else "end",
            dimensions=self.dimensions,
            prompt_name=self.prompt_name,
            expect_version=expect_version,
            outputs=(output,),
            normalize=self.normalize or output != "dense",  # TEI's other routes have no such field
        )


class TeiTokenizeRequest(_TeiBody):
    add_special_tokens: StrictBool = True


class TeiDecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ids: list[StrictInt] | list[list[StrictInt]] = Field(min_length=1)
    skip_special_tokens: StrictBool = True
    model: StrictStr | None = Field(default=None, min_length=1)


def tei_router(call: Serving, auth: Auth) -> APIRouter:
    """TEI's routes over the shared embed call and the engine's tokenizer."""
    router = APIRouter(dependencies=[speaks(TEI)], tags=["text-embeddings-inference"])
    engine = call.engine

    def model_for(key: ApiKey, named: str | None) -> str:
        return named if named is not None else call.default_model(key, "embed")

    async def embed_output(request: Request, key: ApiKey, output: str) -> tuple[Embeddings, TeiEmbedRequest]:
        body = parse_json_body(TeiEmbedRequest, await call.body(request, key))
        model = model_for(key, body.model)
        options = body.options(call.expected_version(request), output)
        return await call.embed(request, key, model, _texts(body.inputs), options), body

    @router.post("/embed_sparse")
    async def embed_sparse(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> Response:
        """Sparse vectors (TEI's `POST /embed_sparse`): each input's non-zero `{index, value}` entries."""
        result, _ = await embed_output(request, key, "sparse")
        rows = [
            [{"index": int(i), "value": float(v)} for i, v in zip(vector.indices, vector.values, strict=True)]
            for vector in result.sparse or ()
        ]
        return JSONResponse(rows, headers=call.headers(request, result))

    @router.post("/embed_all")
    async def embed_all(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> Response:
        """Token vectors (TEI's `POST /embed_all`): the model's multi-vector output, one matrix per input."""
        result, _ = await embed_output(request, key, "multivector")
        return JSONResponse(list(result.multivectors or ()), headers=call.headers(request, result))

    async def embed(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> Response:
        """Embed texts (TEI's `POST /embed`): one vector per input, as a bare array."""
        result, body = await embed_output(request, key, "dense")
        vectors = l2_normalize(result.vectors) if body.normalize else result.vectors
        return JSONResponse(list(vectors), headers=call.headers(request, result))

    router.add_api_route("/embed", embed, methods=["POST"])
    router.add_api_route("/", embed, methods=["POST"], include_in_schema=False)  # where TEI clients post

    @router.post("/tokenize")
    async def tokenize(request: Request, key: ApiKey = Depends(auth.caller)) -> Response:
        """Each input's tokens with their character spans (TEI's `POST /tokenize`)."""
        body = parse_json_body(TeiTokenizeRequest, await call.body(request, key))
        model = model_for(key, body.model)
        info, tokens = await engine.tokenize(
            model,
            _texts(body.inputs),
            add_special_tokens=body.add_special_tokens,
            authorize=call.authorizer(request, key, model),
        )
        rows = [
            [
                {"id": t.id, "text": t.text, "special": t.special, "start": t.start, "stop": t.stop}
                for t in row
            ]
            for row in tokens
        ]
        return JSONResponse(rows, headers=_headers(info))

    @router.post("/decode")
    async def decode(request: Request, key: ApiKey = Depends(auth.caller)) -> Response:
        """Token ids back to text (TEI's `POST /decode`)."""
        body = parse_json_body(TeiDecodeRequest, await call.body(request, key))
        model = model_for(key, body.model)
        ids = body.ids if isinstance(body.ids[0], list) else [body.ids]
        info, texts = await engine.decode(
            model,
            ids,  # type: ignore[arg-type]
            skip_special_tokens=body.skip_special_tokens,
            authorize=call.authorizer(request, key, model),
        )
        return JSONResponse(texts, headers=_headers(info))

    @router.get("/info")
    async def info(key: ApiKey = Depends(auth.caller), model: str | None = None) -> Response:
        """The model TEI routes answer with, in TEI's `GET /info` shape."""
        view, _ = engine.describe(model_for(key, model))
        check_model_allowed(key, view.spec.name, view.spec.names)
        headers = {"X-Model-Version": short_version(view.version)}
        return JSONResponse(_info(view.spec, view.version, view.loaded), headers=headers)

    return router


def _headers(info: ModelInfo) -> dict[str, str]:
    return {"X-Model-Version": info.short_version}


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


def _model_type(spec: ModelSpec) -> dict[str, Any]:
    """TEI's `model_type`: an embedding model's pooling, or a reranker's or classifier's labels."""
    if spec.task == "embed":
        return {"embedding": {"pooling": spec.pooling}}
    labels = {str(index): label for index, label in enumerate(spec.labels)}
    return {"reranker" if spec.task == "rerank" else "classifier": {"id2label": labels}}


def _info(spec: ModelSpec, version: str, loaded: ModelInfo | None) -> dict[str, Any]:
    return {
        "model_id": spec.name,
        "model_sha": version,
        "model_dtype": _DTYPES[loaded.dtype if loaded else spec.dtype],
        "model_type": _model_type(spec),
        "max_concurrent_requests": None,
        "max_input_length": spec.max_tokens,
        "max_batch_tokens": loaded.max_call_tokens if loaded else None,
        "max_batch_requests": None,
        "max_client_batch_size": MAX_INPUTS,
        "tokenization_workers": None,
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }
