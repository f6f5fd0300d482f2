"""Who may use the dashboard: a signed-in admin key, or anyone while the server runs open.

The rule is the API's (`api.auth.identify`): while no active key exists, a server
allowed to run open (loopback, or `--allow-unauthenticated`) serves everyone; once a
key exists, only a session signed in with an admin key gets in. The key behind a
session is read from the store on every request, so revoking it, with the CLI or on
the keys page, ends its sessions at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from keepwarm.api.auth import identify
from keepwarm.api.store_access import StoreAccess
from keepwarm.dashboard.sessions import Session, SessionStore
from keepwarm.errors import InvalidApiKey, PermissionDenied
from keepwarm.store import ANONYMOUS, ApiKey

COOKIE = "keepwarm_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Visitor:
    """One request's session and who it is signed in as."""

    session: Session
    key: ApiKey | None  # the admin key, ANONYMOUS while the server runs open; None: must sign in
    fresh: bool  # this request started the session: its cookie must be set

    @property
    def allowed(self) -> bool:
        return self.key is not None

    @property
    def open(self) -> bool:
        """True while the server runs open (no keys), with no sign-in."""
        return self.key is ANONYMOUS


class Gate:
    """Sessions, sign-in and CSRF checks for the dashboard's routes."""

    def __init__(self, sessions: SessionStore, store: StoreAccess, *, open_when_keyless: bool) -> None:
        self.sessions = sessions
        self.store = store
        self.open_when_keyless = open_when_keyless

    async def visit(self, request: Request) -> Visitor:
        """The request's visitor, with a new session if it brought none (or an expired one)."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = self.sessions.new()
        key = await self.store.call(self._signed_in_as, session.key_id)
        return Visitor(session, key, fresh)

    async def sign_in(self, visitor: Visitor, secret: str) -> Session:
        """A new signed-in session for an admin key's secret; InvalidApiKey or PermissionDenied otherwise."""
        key = await self.store.call(self.store.keys.find, secret.strip())
        if key is None:
            raise InvalidApiKey("That key is unknown or was revoked.")
        if not key.admin:
            raise PermissionDenied(
                f"The key '{key.name}' is not an admin key; the dashboard needs one "
                "(`keepwarm keys create --admin`).",
                code="admin_key_required",
            )
        return self.sessions.sign_in(visitor.session, key.id)

    def check_csrf(self, visitor: Visitor, token: str | None) -> None:
        """PermissionDenied (403) unless `token` is the session's CSRF token."""
        if not self.sessions.csrf_matches(visitor.session, token):
            raise PermissionDenied(
                "This action needs the dashboard's CSRF token; reload the page and try again.",
                code="csrf_token_invalid",
            )

    def remember(self, response: Response, session: Session, request: Request) -> None:
        """Set the session cookie: HttpOnly, SameSite=Strict, only for the dashboard's paths."""
        response.set_cookie(
            COOKIE,
            session.id,
            max_age=int(self.sessions.ttl),
            path=_dashboard_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def forget(self, response: Response, request: Request) -> None:
        response.delete_cookie(COOKIE, path=_dashboard_path(request), httponly=True, samesite="strict")

    def _signed_in_as(self, key_id: int | None) -> ApiKey | None:
        """On a store thread: the session's admin key if still active, else ANONYMOUS if open, else None."""
        if key_id is not None:
            key = self.store.keys.get(key_id)
            if key is not None and key.revoked_at is None and key.admin:
                return key
        try:
            return identify(self.store.keys, None, self.open_when_keyless)
        except InvalidApiKey:
            return None


def _dashboard_path(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/dashboard"
