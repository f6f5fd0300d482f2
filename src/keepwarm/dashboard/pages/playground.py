"""The playground: texts through a model, their similarity matrix, a ranking against a query."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from keepwarm.api.middleware import record_of
from keepwarm.api.responses import JSONResponse, usage_event
from keepwarm.dashboard import views
from keepwarm.dashboard.forms import read_json, texts
from keepwarm.dashboard.gate import Visitor
from keepwarm.errors import InvalidRequest

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes

_MAX_TEXTS = 64


def register(routes: Routes) -> None:
    engine, store = routes.services.engine, routes.services.store

    @routes.page("/playground")
    async def playground(request: Request, visitor: Visitor) -> Response:
        catalog = engine.catalog()
        context = {"choices": views.model_choices(catalog), "rerankers": views.rerankers(catalog)}
        return routes.render(request, visitor, "playground.html", context)

    @routes.data("/api/similarity", method="POST")
    async def similarity(request: Request, visitor: Visitor) -> Response:
        """Embed the texts (a query first, if any) as `POST /v1/embeddings` would, metered to this key."""
        body = await read_json(request)
        model, documents, query = body.get("model"), texts(body.get("texts"), "texts"), body.get("query")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("Choose a model.", param="model")
        ranked = isinstance(query, str) and bool(query.strip())
        inputs = [query, *documents] if ranked else documents
        if len(inputs) > _MAX_TEXTS:
            raise InvalidRequest(f"The playground takes at most {_MAX_TEXTS} texts.", param="texts")
        result = await engine.embed(model, inputs)
        record = record_of(request)
        record.model, record.result = result.model.name, result  # counted and logged as embeddings
        served = result.model
        event = usage_event(visitor.key.id, result)
        await store.call(store.usage.record, event)
        matrix = views.similarity(result.vectors)
        return JSONResponse(
            {
                "model": model,
                "model_version": served.short_version,
                "tokens": result.tokens,
                "inputs": inputs,
                "matrix": matrix,
                "ranking": views.ranking(matrix) if ranked else None,
            }
        )
