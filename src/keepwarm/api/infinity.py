"""Infinity's paths: OpenAI's embeddings and models routes without the `/v1` prefix.

LiteLLM's `infinity/` provider (and Infinity's own clients) post to `/embeddings` and
read `/models`; the bodies are OpenAI's, so these paths are the OpenAI handlers
themselves, registered a second time, not copies.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

_PREFIX = "/v1"
_PATHS = ("/v1/embeddings", "/v1/models", "/v1/models/{model_id:path}")


def add_infinity_paths(app: FastAPI) -> None:
    """Serve each of `_PATHS` also without its `/v1` prefix (call once the OpenAI routes exist)."""
    for route in list(app.router.routes):
        if isinstance(route, APIRoute) and route.path in _PATHS:
            app.add_api_route(
                route.path.removeprefix(_PREFIX),
                route.endpoint,
                methods=list(route.methods),
                tags=["Infinity"],
                openapi_extra=route.openapi_extra,
            )
