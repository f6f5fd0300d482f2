"""API keys: created once, shown once, stored only as a SHA-256 hash, compared in constant time.

A key looks like `kw-` followed by 43 URL-safe characters (256 random bits). Its first
11 characters are its public id (`prefix`): shown by `keepwarm keys list`, used to find
the row, and never enough to use the key. The rest is checked against the stored hash
with `hmac.compare_digest`. A plain SHA-256 is enough for 256-bit random secrets; slow
password hashes exist for low-entropy passwords and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Executable, bindparam, exc, insert, or_, select, update

from keepwarm.store.database import Database, StoreError
from keepwarm.store.direct import DirectTransaction
from keepwarm.store.schema import api_keys

SECRET_PREFIX = "kw-"
_ID_LENGTH = len(SECRET_PREFIX) + 8
_ACTIVE = api_keys.c.revoked_at.is_(None)
# Built once and run through `Database.direct`: every request runs one of these (store/direct.py).
_BY_PREFIX = select(api_keys).where(api_keys.c.prefix == bindparam("prefix"), _ACTIVE)
_ANY_ACTIVE = select(api_keys.c.id).where(_ACTIVE).limit(1)


@dataclass(frozen=True)
class ApiKey:
    """A key's settings; never its secret."""

    id: int
    name: str
    prefix: str
    models: tuple[str, ...] | None = None  # None: every served model
    rpm: int | None = None  # requests per minute, None: unlimited
    tpm: int | None = None  # tokens per minute, None: unlimited
    admin: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None

    def may_use(self, model_names: Iterable[str]) -> bool:
        """True if the key allows a model known by any of `model_names` (name or alias)."""
        return self.models is None or any(name in self.models for name in model_names)

    @property
    def label(self) -> str:
        """How logs and reports name the key: its name and public id, nothing secret."""
        return f"{self.name} ({self.prefix})" if self.id else self.name


# The caller when no keys exist and the server runs open (loopback only, or by explicit flag).
ANONYMOUS = ApiKey(id=0, name="(no key)", prefix="")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _from_row(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        models=tuple(json.loads(row["models"])) if row["models"] is not None else None,
        rpm=row["rpm"],
        tpm=row["tpm"],
        admin=bool(row["admin"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _one_active(conn: Connection, ident: str) -> int:
    """The row id of the one active key with this name or public id (locked); StoreError otherwise."""
    query = select(api_keys.c.id, api_keys.c.prefix).where(
        or_(api_keys.c.name == ident, api_keys.c.prefix == ident), _ACTIVE
    )
    rows = conn.execute(query.with_for_update()).all()
    if not rows:
        raise StoreError(f"no active key has the name or id '{ident}'")
    if len(rows) > 1:
        ids = ", ".join(row.prefix for row in rows)
        raise StoreError(f"'{ident}' matches several keys; use its id ({ids})")
    return rows[0].id


class KeyStore:
    """Create, list, revoke and check API keys."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        *,
        models: tuple[str, ...] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        admin: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        if not name.strip():
            raise StoreError("a key needs a non-empty name")
        models_json = json.dumps(list(models)) if models is not None else None
        while True:
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            row = {
                "name": name,
                "prefix": secret[:_ID_LENGTH],
                "secret_hash": hash_secret(secret),
                "models": models_json,
                "rpm": rpm,
                "tpm": tpm,
                "admin": int(admin),
                "created_at": time.time(),
            }
            try:
                with self.db.transaction() as conn:
                    key_id = conn.execute(insert(api_keys).values(row).returning(api_keys.c.id)).scalar_one()
            except exc.IntegrityError:
                if self._active_named(name):
                    raise StoreError(
                        f"an active key named '{name}' already exists; revoke it or pick another name"
                    ) from None
                continue  # two keys drew the same public id (1 in 2**48): draw again
            return self._get(key_id), secret

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        return [_from_row(row) for row in self.db.query(select(api_keys).order_by(api_keys.c.id))]

    def revoke(self, ident: str) -> ApiKey:
        """Revoke the active key with this name or public id; StoreError if none matches."""
        with self.db.transaction() as conn:
            key_id = _one_active(conn, ident)
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=time.time()))
        return self._get(key_id)

    def update(
        self, ident: str, *, models: tuple[str, ...] | None, rpm: int | None, tpm: int | None
    ) -> ApiKey:
        """Set the models and limits of the active key with this name or public id (None: all / unlimited).

        The secret stays the same, so clients keep working; running servers apply the
        new settings to the key's next request.
        """
        models_json = json.dumps(list(models)) if models is not None else None
        with self.db.transaction() as conn:
            key_id = _one_active(conn, ident)
            conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(models=models_json, rpm=rpm, tpm=tpm)
            )
        return self._get(key_id)

    def get(self, key_id: int) -> ApiKey | None:
        """The key with this row id, revoked or not; None if there is none."""
        rows = self.db.query(select(api_keys).where(api_keys.c.id == key_id))
        return _from_row(rows[0]) if rows else None

    def find(self, secret: str, conn: DirectTransaction | None = None) -> ApiKey | None:
        """The active key whose secret this is, or None (read in `conn` if given)."""
        if not secret.startswith(SECRET_PREFIX) or len(secret) <= _ID_LENGTH:
            return None
        rows = self._direct(conn, _BY_PREFIX, {"prefix": secret[:_ID_LENGTH]})
        if not rows or not hmac.compare_digest(rows[0]["secret_hash"], hash_secret(secret)):
            return None
        return _from_row(rows[0])

    def has_active(self, conn: DirectTransaction | None = None) -> bool:
        """True if at least one key is not revoked (the server then requires keys); read in `conn` if any."""
        return bool(self._direct(conn, _ANY_ACTIVE))

    def _direct(self, conn: DirectTransaction | None, statement: Executable, parameters: Any = None) -> list:
        """`statement`'s rows, in `conn` (a request's usage transaction) or in a read of its own."""
        if conn is not None:
            return conn.execute(statement, parameters)
        with self.db.direct() as own:
            return own.execute(statement, parameters)

    def _active_named(self, name: str) -> bool:
        return self.db.scalar(select(api_keys.c.id).where(api_keys.c.name == name, _ACTIVE)) is not None

    def _get(self, key_id: int) -> ApiKey:
        key = self.get(key_id)
        assert key is not None, "a key just written is there"
        return key
