"""The dashboard's router under `/dashboard`, and the three kinds of route its pages register.

Each kind is registered through one helper that applies its rules:
- `page` (GET): a visitor who may not see the dashboard is sent to the sign-in page;
- `action` (POST form): also needs the session's CSRF token in the form (403 without
  it), then redirects back to a page, where a message says what happened;
- `data` (JSON): answers 401 in OpenAI's error envelope instead of redirecting; a POST
  needs the CSRF token in the X-CSRF-Token header.
Everything a route changes goes through the objects the API uses (the key and usage
store, the batch service, the engine, the catalog reload), so the dashboard can do
nothing the API and CLI could not. The pages themselves are in `dashboard.pages`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from keepwarm.api.store_access import StoreAccess
from keepwarm.cost import Pricing
from keepwarm.dashboard import views
from keepwarm.dashboard.forms import field, read_form
from keepwarm.dashboard.gate import CSRF_FIELD, CSRF_HEADER, Gate, Visitor
from keepwarm.dashboard.history import MetricsHistory
from keepwarm.dashboard.pages import PAGES
from keepwarm.dashboard.render import Renderer, base_path
from keepwarm.dashboard.sessions import SessionStore
from keepwarm.engine import Engine
from keepwarm.errors import ConfigError, InvalidApiKey, KeepwarmError
from keepwarm.store import StoreError

if TYPE_CHECKING:
    from keepwarm.batches import BatchService

# Seconds between metric samples (default 5); the tests set it lower so charts fill quickly.
SAMPLE_SECONDS_ENV = "KEEPWARM_DASHBOARD_SAMPLE_SECONDS"

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class DashboardServices:
    """What the dashboard reads and changes: the same objects the API serves from."""

    engine: Engine
    store: StoreAccess
    pricing: Pricing
    open_when_keyless: bool
    batches: BatchService | None = None  # when the Batch API is served
    reload: Callable[[], None] | None = None  # re-reads the model catalog (as SIGHUP does)


class Routes:
    """The router, and what every page's routes share: the services, the gate, the renderer."""

    def __init__(self, services: DashboardServices, history: MetricsHistory, sessions: SessionStore) -> None:
        self.services = services
        self.history = history
        self.gate = Gate(sessions, services.store, open_when_keyless=services.open_when_keyless)
        self.renderer = Renderer()
        self.router = APIRouter(prefix="/dashboard", include_in_schema=False)

    def page(self, path: str) -> Callable[[Handler], Handler]:
        """GET `path` with `handler(request, visitor) -> Response`, for visitors who may see the dashboard."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                visitor = await self.gate.visit(request)
                if not visitor.allowed:
                    return self.with_cookie(_to_sign_in(request), visitor, request)
                return self.with_cookie(await handler(request, visitor), visitor, request)

            self.router.add_api_route(path, endpoint, methods=["GET"], name=handler.__name__)
            return handler

        return register

    def action(self, path: str, back: str) -> Callable[[Handler], Handler]:
        """POST `path` (a form) with `handler(request, visitor, form, **path_params)`, then back to `back`.

        A refusal from the store or the engine becomes the message shown on that page.
        """

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                visitor = await self.gate.visit(request)
                if not visitor.allowed:
                    return _to_sign_in(request)
                form = await read_form(request)
                self.gate.check_csrf(visitor, field(form, CSRF_FIELD))
                try:
                    await handler(request, visitor, form, **request.path_params)
                except (KeepwarmError, StoreError, ConfigError) as exc:
                    visitor.session.flash.append(("error", getattr(exc, "message", str(exc))))
                return RedirectResponse(base_path(request) + back, 303)

            self.router.add_api_route(path, endpoint, methods=["POST"], name=handler.__name__)
            return handler

        return register

    def data(self, path: str, method: str = "GET") -> Callable[[Handler], Handler]:
        """`method` `path` with `handler(request, visitor) -> Response`; 401 instead of a redirect."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                visitor = await self.gate.visit(request)
                if not visitor.allowed:
                    raise InvalidApiKey("Sign in to the dashboard first.")
                if method != "GET":
                    self.gate.check_csrf(visitor, request.headers.get(CSRF_HEADER))
                return self.with_cookie(await handler(request, visitor), visitor, request)

            self.router.add_api_route(path, endpoint, methods=[method], name=handler.__name__)
            return handler

        return register

    def render(
        self, request: Request, visitor: Visitor, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        return self.renderer.render(request, visitor, template, context, status)

    def store(self, function: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """Run a blocking store (or batch service) call off the event loop."""
        return self.services.store.call(function, *args)

    def with_cookie(self, response: Response, visitor: Visitor, request: Request) -> Response:
        """Set the session cookie when this request started the session."""
        if visitor.fresh:
            self.gate.remember(response, visitor.session, request)
        return response

    @staticmethod
    def note(visitor: Visitor, message: str) -> None:
        """A message for the next page this visitor sees."""
        visitor.session.flash.append(("ok", message))


def _to_sign_in(request: Request) -> Response:
    return RedirectResponse(f"{base_path(request)}/login", 303)


def default_history(engine: Engine) -> MetricsHistory:
    """The sampler of the engine's metrics, started (every 5 s unless the environment says otherwise)."""
    interval = float(os.environ.get(SAMPLE_SECONDS_ENV) or 5.0)
    history = MetricsHistory(
        engine.metrics.registry, interval=interval, budgets=lambda: views.batch_budgets(engine.catalog())
    )
    history.start()
    return history


def dashboard_router(
    services: DashboardServices,
    *,
    history: MetricsHistory | None = None,
    sessions: SessionStore | None = None,
) -> APIRouter:
    """The dashboard's routes, to include in the app that serves the API."""
    routes = Routes(services, history or default_history(services.engine), sessions or SessionStore())
    for register in PAGES:
        register(routes)
    return routes.router
