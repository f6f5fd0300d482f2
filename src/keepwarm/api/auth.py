"""Who is calling: the API key in `Authorization: Bearer ...`, as OpenAI's clients send it.

Every request looks its key up in the store (a primary-key read on a store thread), so
keys created or revoked with the CLI take effect at once, with no restart. While no
active key exists, a server allowed to run open (on loopback, or with
`--allow-unauthenticated`) serves everyone as the anonymous caller, admin routes
included; once a key exists, every request needs one, and admin routes an admin key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keepwarm.api.middleware import record_of
from keepwarm.api.store_access import StoreAccess
from keepwarm.catalog.versions import split_pin
from keepwarm.errors import InvalidApiKey, ModelNotFound, PermissionDenied
from keepwarm.store import ANONYMOUS, ApiKey, KeyStore

if TYPE_CHECKING:
    from keepwarm.engine import Engine

_BEARER = HTTPBearer(auto_error=False, description="An API key made with `keepwarm keys create`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def identify(keys: KeyStore, secret: str | None, open_when_keyless: bool) -> ApiKey:
    """The caller's key; ANONYMOUS when the server runs open; InvalidApiKey otherwise."""
    if secret and (key := keys.find(secret)) is not None:
        return key
    if open_when_keyless and not keys.has_active():
        return ANONYMOUS
    if not secret:
        raise InvalidApiKey(
            "You didn't provide an API key. Send it in the Authorization header: "
            "'Authorization: Bearer <key>'. Keys are made with `keepwarm keys create`.",
            headers=_CHALLENGE,
        )
    raise InvalidApiKey("Incorrect API key provided, or the key was revoked.", headers=_CHALLENGE)


class Auth:
    """FastAPI dependencies: `caller` for the API, `admin` for admin routes."""

    def __init__(self, store: StoreAccess, *, open_when_keyless: bool) -> None:
        self.store = store
        self.open_when_keyless = open_when_keyless

    async def caller(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)
    ) -> ApiKey:
        secret = credentials.credentials if credentials else None
        key = await self.store.call(identify, self.store.keys, secret, self.open_when_keyless)
        record_of(request).key = key
        return key

    async def admin(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)
    ) -> ApiKey:
        key = await self.caller(request, credentials)
        if key is ANONYMOUS:
            return key  # the server runs open (no keys exist): admin routes are open like the rest
        if not key.admin:
            raise PermissionDenied(
                "This endpoint needs an admin key (`keepwarm keys create --admin`).",
                code="admin_key_required",
            )
        return key


def check_model_allowed(key: ApiKey, requested: str, names: tuple[str, ...]) -> None:
    """PermissionDenied (403) unless the key may use the model known by `names`."""
    if not key.may_use(names):
        raise PermissionDenied(
            f"The API key '{key.name}' may not use the model '{requested}'.",
            param="model",
            code="model_not_allowed",
        )


def as_seen_by(error: ModelNotFound, engine: Engine, key: ApiKey | None) -> ModelNotFound:
    """`error` naming only the models `key` may use (none while the caller is unknown).

    A pinned name's versions are listed only if the key may use that name: other keys'
    models are not this caller's business, in an HTTP answer or a batch's error file.
    """
    usable: set[str] = set()
    if key is not None:
        for view in engine.catalog():
            if view.current and key.may_use(view.spec.names):
                usable.update(view.spec.names)
    name, _ = split_pin(error.model)
    detail = error.detail if name in usable else ""
    return ModelNotFound(error.model, [n for n in error.available if n in usable], detail)
