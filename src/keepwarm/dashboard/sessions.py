"""Dashboard sessions: a random id in the cookie, everything else in this process's memory.

The cookie holds only a 256-bit random session id, never the key it was opened with.
Every visitor gets a session, signed in or not, because every state-changing request
must carry the session's CSRF token: while the server runs open (no keys, loopback)
there is no sign-in, and the token is what stops another site from posting to the
dashboard through the operator's browser. Signing in issues a new id, so an id seen
before sign-in is worthless after it.

Sessions expire (signed in: `ttl`, counted from sign-in; not signed in: `anonymous_ttl`
from their last use) and are capped in number: past `limit`, expired sessions go
first, then the least recently used ones that never signed in. A restart signs
everyone out. Used from the event loop only, like `api.lifecycle`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Session:
    """One browser's session."""

    id: str
    csrf: str  # sent back in a hidden field or the X-CSRF-Token header with every change
    expires: float
    key_id: int | None = None  # the admin key signed in with; None: not signed in
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, message), shown once on the next page
    new_secret: str | None = None  # a key just created here, shown once on the next page


def _token() -> str:
    return secrets.token_urlsafe(32)


class SessionStore:
    """Sessions by id, with expiry and a bound on their number."""

    def __init__(
        self,
        *,
        ttl: float = 8 * 3600,
        anonymous_ttl: float = 3600,
        limit: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.anonymous_ttl = anonymous_ttl
        self.limit = limit
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._sessions)

    def new(self) -> Session:
        """A fresh session that is not signed in."""
        session = Session(_token(), _token(), self._clock() + self.anonymous_ttl)
        self._add(session)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown or expired)."""
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        now = self._clock()
        if session.expires <= now:
            del self._sessions[session.id]
            return None
        if session.key_id is None:
            session.expires = now + self.anonymous_ttl
        self._sessions.move_to_end(session.id)
        return session

    def sign_in(self, session: Session, key_id: int) -> Session:
        """Replace `session` with a signed-in one under a new id and a new CSRF token."""
        self._sessions.pop(session.id, None)
        signed_in = Session(_token(), _token(), self._clock() + self.ttl, key_id=key_id, flash=session.flash)
        self._add(signed_in)
        return signed_in

    def end(self, session: Session) -> None:
        """Forget the session (sign-out): its id no longer opens anything."""
        self._sessions.pop(session.id, None)

    @staticmethod
    def csrf_matches(session: Session, token: str | None) -> bool:
        """True if `token` is this session's CSRF token (compared in constant time)."""
        return bool(token) and hmac.compare_digest(session.csrf.encode(), token.encode())

    def _add(self, session: Session) -> None:
        self._sessions[session.id] = session
        if len(self._sessions) > self.limit:
            self._evict()

    def _evict(self) -> None:
        now = self._clock()
        for expired in [s.id for s in self._sessions.values() if s.expires <= now]:
            del self._sessions[expired]
        signed_out = (s.id for s in list(self._sessions.values()) if s.key_id is None)
        while len(self._sessions) > self.limit and (victim := next(signed_out, None)) is not None:
            del self._sessions[victim]
        while len(self._sessions) > self.limit:
            self._sessions.popitem(last=False)
