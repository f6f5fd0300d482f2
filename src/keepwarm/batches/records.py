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

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from keepwarm.batches.files import new_file_id
from keepwarm.batches.tenancy import EVERYONE, Scope, owned_by
from keepwarm.cost import Pricing, job_cost
from keepwarm.errors import Conflict, NotFound
from keepwarm.store.database import Database


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
_ACTIVE_MARKS = ",".join("?" * len(ACTIVE))


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
    def from_row(cls, row: sqlite3.Row) -> BatchRecord:
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


def error_entry(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    """One entry of a batch's `errors.data`."""
    return {"code": code, "message": message, "param": param, "line": line}


class BatchStore:
    """The `batches` table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def insert(
        self,
        sql: sqlite3.Connection,
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
            "INSERT INTO batches (id, key_id, status, endpoint, input_file_id, completion_window, metadata, "
            "created_at, expires_at, output_file_id, error_file_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch_id,
                key_id,
                BatchStatus.VALIDATING,
                endpoint,
                input_file_id,
                completion_window,
                json.dumps(metadata) if metadata else None,
                now,
                now + window_seconds,
                new_file_id(),
                new_file_id(),
            ),
        )
        return batch_id

    def get(self, batch_id: str, scope: Scope) -> BatchRecord:
        """The batch, if `scope` may see it (404 otherwise, the same as for no such batch)."""
        rows = self.database.query(f"SELECT * FROM batches WHERE id = ? AND {owned_by(scope)}", (batch_id,))
        if not rows:
            raise batch_not_found(batch_id)
        return BatchRecord.from_row(rows[0])

    def list(self, scope: Scope, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """One page of the batches `scope` sees, newest first, and whether more follow."""
        where = owned_by(scope)
        parameters: tuple[Any, ...] = ()
        if after:
            cursor = self.database.query(f"SELECT seq FROM batches WHERE id = ? AND {where}", (after,))
            if not cursor:
                raise batch_not_found(after, param="after")
            where, parameters = f"{where} AND seq < ?", (cursor[0]["seq"],)
        rows = self.database.query(
            f"SELECT * FROM batches WHERE {where} ORDER BY seq DESC LIMIT ?", (*parameters, limit + 1)
        )
        return [BatchRecord.from_row(row) for row in rows[:limit]], len(rows) > limit

    @staticmethod
    def open_count(sql: sqlite3.Connection, key_id: int) -> int:
        """How many of the key's batches are not finished yet."""
        query = f"SELECT COUNT(*) FROM batches WHERE key_id = ? AND status IN ({_ACTIVE_MARKS})"
        return sql.execute(query, (key_id, *ACTIVE)).fetchone()[0]

    @staticmethod
    def uses_file(sql: sqlite3.Connection, file_id: str) -> bool:
        """True while an unfinished batch reads this file."""
        query = f"SELECT 1 FROM batches WHERE input_file_id = ? AND status IN ({_ACTIVE_MARKS}) LIMIT 1"
        return sql.execute(query, (file_id, *ACTIVE)).fetchone() is not None

    def next_active(self) -> BatchRecord | None:
        """The oldest batch the runner still has to work on."""
        rows = self.database.query(
            f"SELECT * FROM batches WHERE status IN ({_ACTIVE_MARKS}) ORDER BY seq LIMIT 1", ACTIVE
        )
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
        with self.database.transaction() as sql:
            if self._status(sql, batch_id, EVERYONE) == BatchStatus.VALIDATING:
                sql.execute(
                    "UPDATE batches SET total = ?, model = ?, model_version = ? WHERE id = ?",
                    (total, model, model_version, batch_id),
                )
                self._move(sql, batch_id, BatchStatus.IN_PROGRESS)
            return self._status(sql, batch_id, EVERYONE)

    def fail(self, batch_id: str, errors: list[dict[str, Any]], *, total: int) -> None:
        """→ failed, with the errors that say why (validation, or an internal error)."""
        with self.database.transaction() as sql:
            sql.execute(
                "UPDATE batches SET total = ?, errors = ? WHERE id = ?", (total, json.dumps(errors), batch_id)
            )
            self._move(sql, batch_id, BatchStatus.FAILED)

    def record_errors(self, batch_id: str, errors: list[dict[str, Any]]) -> None:
        """Say why a running batch must stop; the runner then finishes it as failed."""
        with self.database.transaction() as sql:
            sql.execute("UPDATE batches SET errors = ? WHERE id = ?", (json.dumps(errors), batch_id))

    def checkpoint(self, batch_id: str, progress: Progress) -> BatchStatus:
        """Commit a chunk's progress (its output is already on disk); returns the current status."""
        with self.database.transaction() as sql:
            sql.execute(
                f"UPDATE batches SET {', '.join(f'{c} = ?' for c in _PROGRESS_COLUMNS)} WHERE id = ?",
                (*(getattr(progress, c) for c in _PROGRESS_COLUMNS), batch_id),
            )
            return self._status(sql, batch_id, EVERYONE)

    def move(self, batch_id: str, status: BatchStatus, *, when: tuple[BatchStatus, ...]) -> bool:
        """Transition to `status` if the batch is in one of `when`; True if it moved."""
        with self.database.transaction() as sql:
            if self._status(sql, batch_id, EVERYONE) not in when:
                return False
            self._move(sql, batch_id, status)
            return True

    def finish(
        self, sql: sqlite3.Connection, batch_id: str, status: BatchStatus, *, output: bool, error: bool
    ) -> None:
        """Final transition, inside the transaction that also records the output files."""
        sql.execute(
            "UPDATE batches SET output_published = ?, error_published = ? WHERE id = ?",
            (output, error, batch_id),
        )
        self._move(sql, batch_id, status)

    @staticmethod
    def _status(sql: sqlite3.Connection, batch_id: str, scope: Scope) -> BatchStatus:
        row = sql.execute(
            f"SELECT status FROM batches WHERE id = ? AND {owned_by(scope)}", (batch_id,)
        ).fetchone()
        if row is None:
            raise batch_not_found(batch_id)
        return BatchStatus(row[0])

    @staticmethod
    def _move(sql: sqlite3.Connection, batch_id: str, status: BatchStatus) -> None:
        column = _TIMESTAMP.get(status)
        assignments, parameters = (
            ("status = ?", [status])
            if column is None
            else (f"status = ?, {column} = ?", [status, int(time.time())])
        )
        sql.execute(f"UPDATE batches SET {assignments} WHERE id = ?", (*parameters, batch_id))
