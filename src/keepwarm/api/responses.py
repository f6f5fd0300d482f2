"""Response bodies in OpenAI's exact shapes, serialised with orjson.

Vectors go from the NumPy array to bytes without a detour through Python floats:
orjson writes float32 arrays directly, and base64 is taken from each row's raw
little-endian float32 bytes, which is what OpenAI's clients decode.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from keepwarm.catalog.versions import short_version
from keepwarm.engine import Answer, Embeddings, ModelView
from keepwarm.outputs.sparse import SparseVector
from keepwarm.store import UsageEvent


class JSONResponse(Response):
    """A JSON response rendered by orjson (NumPy arrays included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def base64_rows(vectors: np.ndarray) -> list[str]:
    """Each row's raw little-endian bytes (float32, or the int8/uint8 of a compressed dtype), base64."""
    little = np.ascontiguousarray(vectors, dtype=vectors.dtype.newbyteorder("<"))
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]


def embeddings_body(
    result: Embeddings, *, requested_model: str, encoding_format: str, output_dtype: str = "float"
) -> dict[str, Any]:
    """The `/v1/embeddings` response: data in input order, model echoed, token usage."""
    data: list[dict[str, Any]] = [{"object": "embedding", "index": i} for i in range(len(result.vectors))]
    if result.vectors.shape[1]:  # the dense output was asked for
        vectors = np.ascontiguousarray(result.compressed(output_dtype))
        rows: list[Any] = base64_rows(vectors) if encoding_format == "base64" else list(vectors)
        for item, row in zip(data, rows, strict=True):
            item["embedding"] = row
    for item, vector in zip(data, result.sparse or (), strict=False):
        item["sparse_embedding"] = sparse_body(vector)
    for item, matrix in zip(data, result.multivectors or (), strict=False):
        item["multi_vector"] = multivector_body(matrix, encoding_format)
    return {
        "object": "list",
        "data": data,
        "model": requested_model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        # extensions (ignored by OpenAI's clients): which version made these vectors, what the cache saved
        "model_version": result.model.short_version,
        "cache": {"cached_inputs": result.cached_inputs, "cached_tokens": result.cached_tokens},
    }


def sparse_body(vector: SparseVector) -> dict[str, Any]:
    """One sparse vector: ascending vocabulary ids and their weights (qdrant's SparseVector shape)."""
    return {"indices": vector.indices, "values": vector.values}


def multivector_body(matrix: np.ndarray, encoding_format: str) -> Any:
    """One input's token vectors: rows of floats, or base64 of the float32 matrix with its shape."""
    if encoding_format == "base64":
        return {"shape": list(matrix.shape), "data": base64_rows(matrix.reshape(1, -1))[0]}
    return matrix


def _version_body(view: ModelView) -> dict[str, Any]:
    """What one version of a model is: its identity, settings and, when loaded, runtime facts."""
    spec, loaded = view.spec, view.loaded
    body: dict[str, Any] = {
        "version": short_version(view.version),
        "full_version": view.version,
        "current": view.current,
        "loaded": loaded is not None,
        "source": str(spec.directory),
        "max_tokens": spec.max_tokens,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "prompts": spec.prompts,
        "default_prompt": spec.default_prompt,
        "overflow": spec.overflow,
        "matryoshka_dims": list(spec.matryoshka_dims),
        "outputs": list(spec.outputs),
        # what each compressed output dtype loses in search, measured when its calibration was built
        "compressed_retrieval": dict(view.compressed_retrieval) if view.compressed_retrieval else None,
        "token_ids": spec.token_ids,
        "device": spec.device,
        "dtype": spec.dtype,
        "load": spec.load,
        "task": spec.task,
    }
    if spec.task == "classify":
        body["labels"] = list(spec.labels)
    if spec.colbert is not None:  # what its token vectors are: markers, lengths, skiplist, projections
        body["colbert"] = {**spec.colbert.settings(), "dimensions": spec.colbert.dimensions}
    if loaded is not None:
        body.update(
            dimensions=loaded.dimensions,
            runtime=loaded.runtime,
            accuracy=dict(loaded.accuracy),
            max_batch_tokens=loaded.max_call_tokens,  # named like the --max-batch-tokens flag
            max_batch_size=loaded.max_call_rows,  # ... and --max-batch-size
            max_padding_tokens=loaded.max_padding_tokens,
            token_multiple=loaded.token_multiple,  # widths padded to a multiple of this, measured
        )
    return body


def model_body(view: ModelView, versions: list[ModelView]) -> dict[str, Any]:
    """One entry of `/v1/models`: OpenAI's fields, the version it resolves to, and all versions."""
    return {
        "id": view.spec.name,
        "object": "model",
        # a loaded model keeps the time read at load; only an unloaded one is looked up on disk
        "created": view.loaded.created
        if view.loaded
        else int((view.spec.directory / "config.json").stat().st_mtime),
        "owned_by": "keepwarm",
        "aliases": list(view.spec.aliases),
        **_version_body(view),
        "versions": [_version_body(v) for v in versions],
    }


def embeddings_headers(result: Answer) -> dict[str, str]:
    """Response headers naming the exact model version that made the vectors (or scores)."""
    return {"X-Model-Version": result.model.short_version}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope; all four keys are always present."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage_event(key_id: int, result: Answer) -> UsageEvent:
    """What an answered call (embed, rerank, classify) meters to `key_id`: under the version that answered."""
    return UsageEvent(
        key_id,
        result.model.name,
        result.model.short_version,
        result.tokens,
        result.cached_inputs,
        result.timings.compute,
    )
