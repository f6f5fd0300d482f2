"""The HTTP layer: OpenAI's routes over the engine, with the other dialects' routers beside them.

Nothing here knows how vectors are made. Routes authenticate, parse, call the engine
once (api/serving.py, shared by the Cohere, TEI and Infinity routes), meter the answer,
and encode it; every failure leaves in its route's error envelope (api/envelopes.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import Response

from keepwarm.api.admin import admin_router
from keepwarm.api.auth import Auth, as_seen_by, check_model_allowed
from keepwarm.api.cohere import cohere_router
from keepwarm.api.envelopes import envelope_of
from keepwarm.api.http import ClientDisconnected
from keepwarm.api.infinity import add_infinity_paths
from keepwarm.api.lifecycle import Lifecycle
from keepwarm.api.limits import RateLimiter
from keepwarm.api.middleware import RequestMiddleware, record_of
from keepwarm.api.responses import (
    JSONResponse,
    embeddings_body,
    error_body,
    model_body,
)
from keepwarm.api.schemas import EmbeddingRequest, parse_embedding_request
from keepwarm.api.serving import Serving
from keepwarm.api.settings import ApiSettings
from keepwarm.api.store_access import StoreAccess
from keepwarm.api.tei import tei_router
from keepwarm.engine import Engine
from keepwarm.errors import ConfigError, InvalidRequest, KeepwarmError, ModelNotFound, NotReady
from keepwarm.store import ApiKey

log = logging.getLogger(__name__)

# Status code nginx uses for "client closed request": logged, never seen by the client.
CLIENT_CLOSED = 499


def _install_error_handlers(app: FastAPI, engine: Engine, auth: Auth) -> None:
    """Every failure in its route's dialect (api/envelopes.py). Unexpected exceptions are the middleware's.

    A key a metered route has not read yet is read first (`Auth.confirm`): a revoked key
    is answered 401, whatever else was wrong with its request.
    """

    async def confirmed(request: Request, error: KeepwarmError) -> KeepwarmError:
        try:
            await auth.confirm(request)
        except KeepwarmError as refusal:  # revoked (401), or the database is away (503)
            return refusal
        return error

    @app.exception_handler(KeepwarmError)
    async def keepwarm_error(request: Request, exc: KeepwarmError) -> Response:
        record = record_of(request)
        exc = await confirmed(request, exc)
        if isinstance(exc, ModelNotFound):  # other keys' models are not this caller's business
            exc = as_seen_by(exc, engine, record.key)
        record.error = exc.code or exc.type
        return envelope_of(request.scope).response(exc, record.id)

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, _: ClientDisconnected) -> Response:
        record_of(request).error = "client_disconnected"
        path = request.url.path
        log.info("client disconnected before its answer; its queued inputs were dropped (%s)", path)
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        record_of(request).error = "invalid_request_error"
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")) or None
        error = await confirmed(request, InvalidRequest(f"Invalid request: {first['msg']}", param=param))
        record_of(request).error = error.code or error.type
        return envelope_of(request.scope).response(error, record_of(request).id)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message, code = f"Unknown request URL: {request.method} {request.url.path}.", "unknown_url"
        else:
            message, code = str(exc.detail), None
        record_of(request).error = code or "invalid_request_error"
        return JSONResponse(error_body(message, "invalid_request_error", None, code), exc.status_code)


def create_app(
    engine: Engine,
    *,
    store: StoreAccess,
    auth: Auth,
    limiter: RateLimiter,
    lifecycle: Lifecycle,
    settings: ApiSettings,
    reload: Callable[[], None] | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The ASGI application serving `engine`, keys and usage through `store`, and `routers` besides.

    `lifecycle` is how the server drains it; `reload` re-reads the model catalog for
    `POST /admin/reload` (without it, that route answers 503). The caller owns the
    collaborators: it closes `store` at shutdown, after the last request, so every usage
    write is committed.
    """
    app = FastAPI(
        title="keepwarm", summary="OpenAI-compatible embeddings", default_response_class=JSONResponse
    )
    app.add_middleware(RequestMiddleware, lifecycle=lifecycle, metrics=engine.metrics)
    _install_error_handlers(app, engine, auth)
    served_names = list(dict.fromkeys(name for spec in engine.specs for name in spec.names))
    call = Serving(engine, store, limiter, settings)

    @app.post(
        "/v1/embeddings",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingRequest"}}
                },
            }
        },
    )
    async def create_embeddings(request: Request, key: ApiKey = Depends(auth.metered_caller)) -> Response:
        """Embed text or token ids (OpenAI's `POST /v1/embeddings`)."""
        body = parse_embedding_request(await call.body(request, key))
        options = body.options(call.expected_version(request))
        result = await call.embed(request, key, body.model, body.input, options)
        return JSONResponse(
            embeddings_body(
                result,
                requested_model=body.model,
                encoding_format=body.encoding_format or "float",
                output_dtype=body.output_dtype or "float",
            ),
            headers=call.headers(request, result),
        )

    @app.get("/v1/models")
    async def list_models(key: ApiKey = Depends(auth.caller)) -> Response:
        """The models this server serves and the caller's key may use (OpenAI's `GET /v1/models`)."""
        views = engine.catalog()
        current = [view for view in views if view.current and key.may_use(view.spec.names)]
        data = [model_body(view, [v for v in views if v.spec.name == view.spec.name]) for view in current]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(
        model_id: str = Path(examples=served_names), key: ApiKey = Depends(auth.caller)
    ) -> Response:
        """One model by name or alias (OpenAI's `GET /v1/models/{id}`)."""
        view, versions = engine.describe(model_id)
        check_model_allowed(key, model_id, view.spec.names)
        return JSONResponse(model_body(view, versions))

    @app.get("/health")
    async def health() -> Response:
        """The process is alive and answering."""
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        """Every model is loaded and warmed up (503 until then, and while shutting down)."""
        if lifecycle.draining:
            raise NotReady("keepwarm is shutting down", retry_after=1)
        if not engine.ready:
            raise NotReady(
                "keepwarm is not ready: models are still loading or the server is stopping", retry_after=1
            )
        return JSONResponse({"status": "ready", "models": [m.spec.name for m in engine.models]})

    @app.post("/admin/reload")
    async def reload_catalog(_: ApiKey = Depends(auth.admin)) -> Response:
        """Re-read the model catalog and swap models without dropping in-flight requests (like SIGHUP)."""
        if reload is None:
            raise NotReady("this server was started without a reloadable catalog")
        try:
            await asyncio.get_running_loop().run_in_executor(None, reload)
        except ConfigError as exc:
            raise InvalidRequest(f"the new catalog was refused, the old one keeps serving: {exc}") from None
        current = [view for view in engine.catalog() if view.current]
        return JSONResponse({"status": "reloaded", "models": [model_body(view, [view]) for view in current]})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # after OpenAI's routes: a request is matched against the routes in order, and
    # /v1/embeddings, the one under load, should not wait behind every other router's
    for router in routers:
        app.include_router(router)
    app.include_router(admin_router(auth, store, settings.pricing))
    app.include_router(cohere_router(call, auth))
    app.include_router(tei_router(call, auth))
    add_infinity_paths(app)
    _register_request_schema(app, served_names)
    return app


def _register_request_schema(app: FastAPI, model_names: list[str]) -> None:
    """Publish EmbeddingRequest in the OpenAPI document (the route reads raw bytes itself).

    The served model names are given as examples, so readers of /docs and API fuzzers
    see requests that reach a model.
    """
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = original()
            defs = EmbeddingRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            defs["properties"]["model"]["examples"] = model_names
            schema.setdefault("components", {}).setdefault("schemas", {})["EmbeddingRequest"] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
