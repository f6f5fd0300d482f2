"""Batch records and their state transitions, each one a single transaction.

Status flow (OpenAI's): validating → in_progress → finalizing → completed; validating →
failed; validating | in_progress → cancelling → cancelled; in_progress → expired.
Every transition is a conditional UPDATE on the current status, so two actors (the API
cancelling, the runner finishing) can never both win, and a crash at any instant
leaves the row in one well-defined status from which the runner carries on.

Every batch belongs to the API key that created it (`key_id`); reads take the caller's
scope (see tenancy), so another key's batch is as absent as one that never existed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from keepwarm.batches.files import new_file_id
from keepwarm.batches.tenancy import EVERYONE, Scope, owned_by
from keepwarm.cost import Pricing, job_cost
from keepwarm.errors import Conflict, NotFound
from keepwarm.store.database import Database
from keepwarm.store.schema import batches


class BatchStatus(StrEnum):
    """OpenAI's batch statuses."""

    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# the runner still has work to do on a batch in one of these; the key's open batches
ACTIVE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)
_TIMESTAMP = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
    BatchStatus.EXPIRED: "expired_at",
}
_OPEN = batches.c.status.in_([str(status) for status in ACTIVE])


def batch_not_found(batch_id: str, param: str = "batch_id") -> NotFound:
    """The one answer for a batch that does not exist and for another key's batch."""
    return NotFound(f"No batch found with id '{batch_id}'.", param=param)


@dataclass(frozen=True)
class Progress:
    """How far a batch got: the next input line to run and the committed output sizes."""

    next_line: int = 0
    input_offset: int = 0
    output_bytes: int = 0
    error_bytes: int = 0
    completed: int = 0
    failed: int = 0
    tokens: int = 0
    seconds: float = 0.0


_PROGRESS_COLUMNS = tuple(f.name for f in fields(Progress))


@dataclass(frozen=True)
class BatchRecord:
    """One batch, as stored."""

    id: str
    key_id: int
    status: BatchStatus
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    model: str | None
    model_version: str | None
    errors: list[dict[str, Any]] | None
    created_at: int
    expires_at: int
    # when each status was reached (None until it is)
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    expired_at: int | None
    output_file_id: str
    error_file_id: str
    output_published: bool
    error_published: bool
    total: int
    progress: Progress

    @classmethod
    def from_row(cls, row: Any) -> BatchRecord:
        return cls(
            id=row["id"],
            key_id=row["key_id"],
            status=BatchStatus(row["status"]),
            endpoint=row["endpoint"],
            input_file_id=row["input_file_id"],
            completion_window=row["completion_window"],
            metadata=json.loads(row["metadata"]) if row["metadata"] else None,
            model=row["model"],
            model_version=row["model_version"],
            errors=json.loads(row["errors"]) if row["errors"] else None,
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            **{column: row[column] for column in _TIMESTAMP.values()},
            output_file_id=row["output_file_id"],
            error_file_id=row["error_file_id"],
            output_published=bool(row["output_published"]),
            error_published=bool(row["error_published"]),
            total=row["total"],
            progress=Progress(**{column: row[column] for column in _PROGRESS_COLUMNS}),
        )

    def to_openai(self, pricing: Pricing) -> dict[str, Any]:
        """OpenAI's Batch object, plus keepwarm's `model_version` and `cost`."""
        progress = self.progress
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": str(self.status),
            "output_file_id": self.output_file_id if self.output_published else None,
            "error_file_id": self.error_file_id if self.error_published else None,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **{column: getattr(self, column) for column in _TIMESTAMP.values()},
            "request_counts": {
                "total": self.total,
                "completed": progress.completed,
                "failed": progress.failed,
            },
            "metadata": self.metadata,
            "model": self.model,
            "usage": {
                "input_tokens": progress.tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": progress.tokens,
            },
            "model_version": self.model_version,
            "cost": job_cost(progress.tokens, progress.seconds, pricing),
        }


Fence = Callable[[Connection], None]


def error_entry(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    """One entry of a batch's `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


class BatchStore:
    """The `batches` table."""

    def __init__(self, database: Database) -> None:
        self.database = database
        # the runner's lease check (see leader), run first in every transaction the runner makes
        self.fence: Fence = lambda sql: None

    def insert(
        self,
        sql: Connection,
        *,
        key_id: int,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        window_seconds: int,
        metadata: dict[str, str] | None,
    ) -> str:
        """Add a validating batch inside the caller's transaction; returns its id."""
        batch_id = f"batch_{secrets.token_hex(16)}"
        now = int(time.time())
        sql.execute(
            insert(batches).values(
                id=batch_id,
                key_id=key_id,
                status=str(BatchStatus.VALIDATING),
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                metadata=json.dumps(metadata) if metadata else None,
                created_at=now,
                expires_at=now + window_seconds,
                output_file_id=new_file_id(),
                error_file_id=new_file_id(),
            )
        )
        return batch_id

    def get(self, batch_id: str, scope: Scope) -> BatchRecord:
        """The batch, if `scope` may see it (404 otherwise, the same as for no such batch)."""
        rows = self.database.query(select(batches).where(batches.c.id == batch_id, owned_by(batches, scope)))
        if not rows:
            raise batch_not_found(batch_id)
        return BatchRecord.from_row(rows[0])

    def list(self, scope: Scope, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """One page of the batches `scope` sees, newest first, and whether more follow."""
        query = select(batches).where(owned_by(batches, scope))
        if after:
            cursor = self.database.query(
                select(batches.c.seq).where(batches.c.id == after, owned_by(batches, scope))
            )
            if not cursor:
                raise batch_not_found(after, param="after")
            query = query.where(batches.c.seq < cursor[0]["seq"])
        rows = self.database.query(query.order_by(batches.c.seq.desc()).limit(limit + 1))
        return [BatchRecord.from_row(row) for row in rows[:limit]], len(rows) > limit

    @staticmethod
    def open_count(sql: Connection, key_id: int) -> int:
        """How many of the key's batches are not finished yet."""
        query = select(func.count()).select_from(batches).where(batches.c.key_id == key_id, _OPEN)
        return sql.execute(query).scalar_one()

    @staticmethod
    def uses_file(sql: Connection, file_id: str) -> bool:
        """True while an unfinished batch reads this file."""
        query = select(batches.c.seq).where(batches.c.input_file_id == file_id, _OPEN).limit(1)
        return sql.execute(query).first() is not None

    def next_active(self) -> BatchRecord | None:
        """The oldest batch the runner still has to work on."""
        rows = self.database.query(select(batches).where(_OPEN).order_by(batches.c.seq).limit(1))
        return BatchRecord.from_row(rows[0]) if rows else None

    def cancel(self, batch_id: str, scope: Scope) -> BatchRecord:
        """Ask for cancellation; the runner stops after its current chunk and finishes as cancelled."""
        with self.database.transaction() as sql:
            status = self._status(sql, batch_id, scope)
            if status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
                self._move(sql, batch_id, BatchStatus.CANCELLING)
            elif status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                raise Conflict(f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable")
        return self.get(batch_id, EVERYONE)

    def start(self, batch_id: str, *, total: int, model: str, model_version: str) -> BatchStatus:
        """validating → in_progress with the validated line count; returns the status after."""
        with self._runner_transaction() as sql:
            if self._status(sql, batch_id, EVERYONE) == BatchStatus.VALIDATING:
                self._set(sql, batch_id, total=total, model=model, model_version=model_version)
                self._move(sql, batch_id, BatchStatus.IN_PROGRESS)
            return self._status(sql, batch_id, EVERYONE)

    def fail(self, batch_id: str, errors: list[dict[str, Any]], *, total: int) -> None:
        """→ failed, with the errors that say why (validation, or an internal error)."""
        with self._runner_transaction() as sql:
            self._set(sql, batch_id, total=total, errors=json.dumps(errors))
            self._move(sql, batch_id, BatchStatus.FAILED)

    def record_errors(self, batch_id: str, errors: list[dict[str, Any]]) -> None:
        """Say why a running batch must stop; the runner then finishes it as failed."""
        with self._runner_transaction() as sql:
            self._set(sql, batch_id, errors=json.dumps(errors))

    def checkpoint(self, batch_id: str, progress: Progress) -> BatchStatus:
        """Commit a chunk's progress (its output is already on disk); returns the current status."""
        with self._runner_transaction() as sql:
            self._set(sql, batch_id, **{column: getattr(progress, column) for column in _PROGRESS_COLUMNS})
            return self._status(sql, batch_id, EVERYONE)

    def move(self, batch_id: str, status: BatchStatus, *, when: tuple[BatchStatus, ...]) -> bool:
        """Transition to `status` if the batch is in one of `when`; True if it moved."""
        with self._runner_transaction() as sql:
            if self._status(sql, batch_id, EVERYONE) not in when:
                return False
            self._move(sql, batch_id, status)
            return True

    def finish(
        self, sql: Connection, batch_id: str, status: BatchStatus, *, output: bool, error: bool
    ) -> None:
        """Final transition, inside the transaction that also records the output files."""
        self.fence(sql)
        self._set(sql, batch_id, output_published=int(output), error_published=int(error))
        self._move(sql, batch_id, status)

    @contextlib.contextmanager
    def _runner_transaction(self) -> Iterator[Connection]:
        """A transaction of the runner's, refused (LeaseLost) once another process holds the lease."""
        with self.database.transaction() as sql:
            self.fence(sql)
            yield sql

    @staticmethod
    def _status(sql: Connection, batch_id: str, scope: Scope) -> BatchStatus:
        """The batch's status, its row locked until the transaction ends (PostgreSQL; SQLite locks all)."""
        query = select(batches.c.status).where(batches.c.id == batch_id, owned_by(batches, scope))
        status = sql.execute(query.with_for_update()).scalar()
        if status is None:
            raise batch_not_found(batch_id)
        return BatchStatus(status)

    @staticmethod
    def _set(sql: Connection, batch_id: str, **values: Any) -> None:
        sql.execute(update(batches).where(batches.c.id == batch_id).values(**values))

    @classmethod
    def _move(cls, sql: Connection, batch_id: str, status: BatchStatus) -> None:
        column = _TIMESTAMP.get(status)
        stamp = {column: int(time.time())} if column else {}
        cls._set(sql, batch_id, status=str(status), **stamp)
