"""Who is calling: the API key in `Authorization: Bearer ...`, as OpenAI's clients send it.

Every request reads its key from the store, so keys created, changed or revoked with
the CLI take effect on the next request, on every replica, with no restart. While no
active key exists, a server allowed to run open (on loopback, or with
`--allow-unauthenticated`) serves everyone as the anonymous caller, admin routes
included; once a key exists, every request needs one, and admin routes an admin key.

Metered routes (those answering through `Serving.answer`) read the key later: a secret
seen before starts its work at once under the key it had then, and the key is read
again inside the transaction that commits the request's usage, before anything is
answered. If it was revoked the request is refused (401) and nothing is metered; if its
models or limits changed, the work is done again under the new settings. That saves a
store round trip per request (docs/benchmarks.md, "The per-request store work"). An error answer
reads the key first too, so a revoked key never learns more than a 401. A secret not
seen before (or not since it failed) is read before any work.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keepwarm.api.middleware import record_of
from keepwarm.api.store_access import StoreAccess
from keepwarm.catalog.versions import split_pin
from keepwarm.errors import InvalidApiKey, ModelNotFound, PermissionDenied
from keepwarm.store import ANONYMOUS, ApiKey, KeyStore
from keepwarm.store.direct import DirectTransaction
from keepwarm.store.keys import hash_secret

if TYPE_CHECKING:
    from keepwarm.engine import Engine

_BEARER = HTTPBearer(auto_error=False, description="An API key made with `keepwarm keys create`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_SEEN_SECRETS = 4096  # secrets whose key is remembered for metered routes (least recently used dropped)


class KeyChanged(Exception):
    """The caller's key changed (models, limits) since it was last read; `key` is how it is now."""

    def __init__(self, key: ApiKey) -> None:
        super().__init__(key.label)
        self.key = key


def identify(
    keys: KeyStore, secret: str | None, open_when_keyless: bool, conn: DirectTransaction | None = None
) -> ApiKey:
    """The caller's key (read in `conn` if given); ANONYMOUS when the server runs open; else InvalidApiKey."""
    if secret and (key := keys.find(secret, conn)) is not None:
        return key
    if open_when_keyless and not keys.has_active(conn):
        return ANONYMOUS
    if not secret:
        raise InvalidApiKey(
            "You didn't provide an API key. Send it in the Authorization header: "
            "'Authorization: Bearer <key>'. Keys are made with `keepwarm keys create`.",
            headers=_CHALLENGE,
        )
    raise InvalidApiKey("Incorrect API key provided, or the key was revoked.", headers=_CHALLENGE)


class Auth:
    """FastAPI dependencies: `caller` for the API, `metered_caller` for metered routes, `admin` for admin."""

    def __init__(self, store: StoreAccess, *, open_when_keyless: bool) -> None:
        self.store = store
        self.open_when_keyless = open_when_keyless
        self._seen: OrderedDict[str, ApiKey] = OrderedDict()  # hash of a secret -> its key when last read
        self._lock = threading.Lock()  # checks run on store threads

    async def caller(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)
    ) -> ApiKey:
        """The caller's key, read now."""
        secret = credentials.credentials if credentials else None
        digest = hash_secret(secret or "")
        try:
            key = await self.store.call(identify, self.store.keys, secret, self.open_when_keyless)
        except InvalidApiKey:
            self._forget(digest)
            raise
        self._remember(digest, key)
        record_of(request).key = key
        return key

    async def metered_caller(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)
    ) -> ApiKey:
        """The caller's key as last read for this secret, read again with the usage (see the module docs).

        Only for routes that answer through `Serving.answer`, which runs `record.key_check`.
        """
        secret = credentials.credentials if credentials else None
        digest = hash_secret(secret or "")
        with self._lock:
            key = self._seen.get(digest)
            if key is not None:
                self._seen.move_to_end(digest)
        if key is None:
            return await self.caller(request, credentials)
        record = record_of(request)
        record.key = key
        record.key_check = self._check(secret, digest, key)
        return key

    async def confirm(self, request: Request) -> None:
        """Read the key now if this request has not yet (before an error answer); InvalidApiKey if gone."""
        record = record_of(request)
        if record.key_check is None:
            return
        check, record.key_check = record.key_check, None

        def read_and_check() -> None:
            with self.store.keys.db.direct() as conn:
                check(conn)

        try:
            await self.store.call(read_and_check)
        except KeyChanged as changed:
            record.key = changed.key

    def _check(self, secret: str | None, digest: str, seen: ApiKey) -> Callable[[DirectTransaction], None]:
        """In the usage transaction: InvalidApiKey if the key is gone, KeyChanged if it is not `seen` now."""

        def check(conn: DirectTransaction) -> None:
            try:
                key = identify(self.store.keys, secret, self.open_when_keyless, conn)
            except InvalidApiKey:
                self._forget(digest)
                raise
            if key != seen:
                self._remember(digest, key)
                raise KeyChanged(key)

        return check

    def _remember(self, digest: str, key: ApiKey) -> None:
        with self._lock:
            self._seen[digest] = key
            self._seen.move_to_end(digest)
            if len(self._seen) > _SEEN_SECRETS:
                self._seen.popitem(last=False)

    def _forget(self, digest: str) -> None:
        with self._lock:
            self._seen.pop(digest, None)

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
