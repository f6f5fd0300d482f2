"""API keys: list, create (the secret shown once), set models and limits, revoke."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from keepwarm.dashboard.forms import Form, field, limit
from keepwarm.dashboard.gate import Visitor
from keepwarm.engine import Engine
from keepwarm.errors import InvalidRequest

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes


def _models(engine: Engine, form: Form) -> tuple[str, ...] | None:
    """The models a key may use, from a comma-separated field (empty: every model); all must be served."""
    names = tuple(dict.fromkeys(name.strip() for name in field(form, "models").split(",") if name.strip()))
    if not names:
        return None
    served = {name for view in engine.catalog() for name in view.spec.names}
    unknown = [name for name in names if name not in served]
    if unknown:
        raise InvalidRequest(
            f"No served model is called {', '.join(unknown)}; served: {', '.join(sorted(served))}."
        )
    return names


def register(routes: Routes) -> None:
    keys, engine = routes.services.store.keys, routes.services.engine

    @routes.page("/keys")
    async def keys_page(request: Request, visitor: Visitor) -> Response:
        secret, visitor.session.new_secret = visitor.session.new_secret, None
        context = {
            "keys": await routes.store(keys.list),
            "new_secret": secret,
            "served": sorted({view.spec.name for view in engine.catalog()}),
        }
        return routes.render(request, visitor, "keys.html", context)

    @routes.action("/keys", back="/keys")
    async def create_key(request: Request, visitor: Visitor, form: Form) -> None:
        create = partial(
            keys.create,
            field(form, "name"),
            models=_models(engine, form),
            rpm=limit(form, "rpm"),
            tpm=limit(form, "tpm"),
            admin=field(form, "admin") == "on",
        )
        key, visitor.session.new_secret = await routes.store(create)
        routes.note(
            visitor,
            f"Key '{key.name}' ({key.prefix}) created. Copy its secret now: it is shown only this once.",
        )

    @routes.action("/keys/{prefix}/limits", back="/keys")
    async def update_key(request: Request, visitor: Visitor, form: Form, prefix: str) -> None:
        update = partial(
            keys.update, prefix, models=_models(engine, form), rpm=limit(form, "rpm"), tpm=limit(form, "tpm")
        )
        key = await routes.store(update)
        routes.note(visitor, f"Key '{key.name}' updated; the server applies it to the key's next request.")

    @routes.action("/keys/{prefix}/revoke", back="/keys")
    async def revoke_key(request: Request, visitor: Visitor, form: Form, prefix: str) -> None:
        key = await routes.store(keys.revoke, prefix)
        routes.note(visitor, f"Key '{key.name}' ({key.prefix}) revoked; it is refused from now on.")
