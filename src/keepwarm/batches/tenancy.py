"""Who owns what in the Batch and Files APIs, and how much one key may hold.

Every file and batch records the id of the API key that created it (0 for the
anonymous caller of a server running without keys); a batch's output and error files
belong to the batch's owner. A caller's *scope* is the owner id whose objects it sees,
or None for an admin key, which sees and manages everyone's. Another key's object is
answered exactly like one that does not exist (404), so its existence is not revealed.

Per key, the bytes of its live files and the number of its open batches are capped
(`TenantLimits`); past either, a request is refused with 429 in OpenAI's envelope.
A batch's tokens count against the key's tokens per minute at background priority:
`tpm_reserve` is the share of that budget batch lines always leave to online calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Table, true

from keepwarm.errors import QuotaExceeded
from keepwarm.store import ANONYMOUS, ApiKey, KeyStore

Scope = int | None  # the owner id a caller sees; None: everyone's (an admin key)
EVERYONE: Scope = None  # the runner's own reads, and an admin key's
_MIB = 1024 * 1024


@dataclass(frozen=True)
class TenantLimits:
    """What one API key may hold at once."""

    max_stored_bytes: int = 10 * 1024 * _MIB  # the key's live files, uploads and batch outputs together
    max_open_batches: int = 100  # batches not yet completed, failed, cancelled or expired
    tpm_reserve: float = 0.25  # share of the key's TPM that batch lines leave to its online calls


def scope_of(key: ApiKey) -> Scope:
    """Whose objects `key` sees: its own, or everyone's for an admin key."""
    return EVERYONE if key.admin else key.id


def owned_by(table: Table, scope: Scope) -> ColumnElement[bool]:
    """The condition for rows of `table` (with a `key_id` column) that `scope` sees."""
    return true() if scope is EVERYONE else table.c.key_id == scope


def owner_key(keys: KeyStore, key_id: int) -> ApiKey | None:
    """The owner's key as it is now (limits, models), or None once it is revoked."""
    if key_id == ANONYMOUS.id:
        return ANONYMOUS
    return next((key for key in keys.list() if key.id == key_id and key.revoked_at is None), None)


def storage_quota_exceeded(key: ApiKey, stored: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"The API key '{key.name}' stores {stored} bytes of files, and this upload would take it past "
        f"its limit of {limit} bytes. Delete files it no longer needs (DELETE /v1/files/{{file_id}}).",
        param="file",
        code="storage_quota_exceeded",
    )


def too_many_open_batches(key: ApiKey, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"The API key '{key.name}' has {limit} batches that have not finished, its limit. "
        "Wait for one to finish, or cancel one.",
        code="too_many_open_batches",
    )
