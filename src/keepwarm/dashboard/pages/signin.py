"""Signing in with an admin key and out again, and the static files every page loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from keepwarm.dashboard.forms import field, read_form
from keepwarm.dashboard.gate import CSRF_FIELD
from keepwarm.dashboard.render import asset_response, base_path
from keepwarm.errors import KeepwarmError, NotFound

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes


def register(routes: Routes) -> None:
    router, gate = routes.router, routes.gate

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        """The stylesheet and the script: public, cached for a year under a URL that changes with them."""
        response = asset_response(name)
        if response is None:
            raise NotFound(f"No dashboard file named '{name[:80]}'.")
        return response

    @router.get("/login")
    async def login_page(request: Request) -> Response:
        visitor = await gate.visit(request)
        if visitor.allowed:
            response: Response = RedirectResponse(base_path(request), 303)
        else:
            response = routes.render(request, visitor, "login.html", {"error": None})
        return routes.with_cookie(response, visitor, request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        visitor = await gate.visit(request)
        form = await read_form(request)
        gate.check_csrf(visitor, field(form, CSRF_FIELD))
        try:
            session = await gate.sign_in(visitor, field(form, "key"))
        except KeepwarmError as exc:
            return routes.render(request, visitor, "login.html", {"error": exc.message}, exc.status)
        response = RedirectResponse(base_path(request), 303)
        gate.remember(response, session, request)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        visitor = await gate.visit(request)
        gate.check_csrf(visitor, field(await read_form(request), CSRF_FIELD))
        gate.sessions.end(visitor.session)
        response = RedirectResponse(f"{base_path(request)}/login", 303)
        gate.forget(response, request)
        return response
