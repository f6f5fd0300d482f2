"""Batch records and their state transitions, each one a single transaction.

Status flow (OpenAI's): validating → in_progress → finalizing → completed; validating →
failed; validating | in_progress → cancelling → cancelled; in_progress → expired.
Every transition is a conditional UPDATE on the current status, so two actors (the API
cancelling, the runner finishing) can never both win, and a crash at any instant
leaves the row in one well-defined status from which the runner carries on.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from keepwarm.store.database import Database
from keepwarm.batches.files import new_file_id
from keepwarm.cost import Pricing, job_cost
from keepwarm.errors import Conflict, NotFound

VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED = "validating", "in_progress", "finalizing", "completed"
FAILED, CANCELLING, CANCELLED, EXPIRED = "failed", "cancelling", "cancelled", "expired"
ACTIVE = (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING)  # the runner still has work to do
_TIMESTAMP = {
    IN_PROGRESS: "in_progress_at", FINALIZING: "finalizing_at", COMPLETED: "completed_at", FAILED: "failed_at",
    CANCELLING: "cancelling_at", CANCELLED: "cancelled_at", EXPIRED: "expired_at",
}


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


@dataclass(frozen=True)
class BatchRecord:
    """One batch row."""

    row: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def progress(self) -> Progress:
        return Progress(**{name: self.row[name] for name in Progress.__dataclass_fields__})

    def to_openai(self, pricing: Pricing) -> dict[str, Any]:
        """OpenAI's Batch object, plus keepwarm's `model_version` and `cost`."""
        row = self.row
        errors = json.loads(row["errors"]) if row["errors"] else None
        return {
            "id": row["id"],
            "object": "batch",
            "endpoint": row["endpoint"],
            "errors": {"object": "list", "data": errors} if errors else None,
            "input_file_id": row["input_file_id"],
            "completion_window": row["completion_window"],
            "status": row["status"],
            "output_file_id": row["output_file_id"] if row["output_published"] else None,
            "error_file_id": row["error_file_id"] if row["error_published"] else None,
            "created_at": row["created_at"],
            "expires_at": row["expires_at"],
            **{column: row[column] for column in _TIMESTAMP.values()},
            "request_counts": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
            "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
            "model": row["model"],
            "usage": {
                "input_tokens": row["tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": row["tokens"],
            },
            "model_version": row["model_version"],
            "cost": job_cost(row["tokens"], row["seconds"], pricing),
        }


def _set_status(status: str, now: int) -> tuple[str, list[Any]]:
    column = _TIMESTAMP.get(status)
    return (f"status = ?, {column} = ?", [status, now]) if column else ("status = ?", [status])


class JobStore:
    """The `batches` table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def create(
        self, *, input_file_id: str, endpoint: str, completion_window: str, window_seconds: int,
        metadata: dict[str, str] | None,
    ) -> BatchRecord:
        batch_id = f"batch_{secrets.token_hex(16)}"
        now = int(time.time())
        with self.database.transaction() as sql:
            sql.execute(
                "INSERT INTO batches (id, status, endpoint, input_file_id, completion_window, metadata, created_at, "
                "expires_at, output_file_id, error_file_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (batch_id, VALIDATING, endpoint, input_file_id, completion_window,
                 json.dumps(metadata) if metadata else None, now, now + window_seconds, new_file_id(), new_file_id()),
            )
        return self.get(batch_id)

    def get(self, batch_id: str) -> BatchRecord:
        rows = self.database.query("SELECT * FROM batches WHERE id = ?", (batch_id,))
        if not rows:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        return BatchRecord(dict(rows[0]))

    def list(self, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """One page of batches, newest first, and whether more follow."""
        where, parameters = "", ()
        if after:
            cursor = self.database.query("SELECT seq FROM batches WHERE id = ?", (after,))
            if not cursor:
                raise NotFound(f"No batch found with id '{after}'.", param="after")
            where, parameters = "WHERE seq < ?", (cursor[0]["seq"],)
        rows = self.database.query(f"SELECT * FROM batches {where} ORDER BY seq DESC LIMIT ?", (*parameters, limit + 1))
        return [BatchRecord(dict(row)) for row in rows[:limit]], len(rows) > limit

    def uses_file(self, file_id: str) -> bool:
        """True while an unfinished batch reads this file."""
        marks = ",".join("?" * len(ACTIVE))
        return bool(
            self.database.query(
                f"SELECT 1 FROM batches WHERE input_file_id = ? AND status IN ({marks}) LIMIT 1", (file_id, *ACTIVE)
            )
        )

    def next_active(self) -> BatchRecord | None:
        """The oldest batch the runner still has to work on."""
        marks = ",".join("?" * len(ACTIVE))
        rows = self.database.query(f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY seq LIMIT 1", ACTIVE)
        return BatchRecord(dict(rows[0])) if rows else None

    def cancel(self, batch_id: str) -> BatchRecord:
        """Ask for cancellation; the runner stops after its current chunk and finishes as cancelled."""
        with self.database.transaction() as sql:
            status = self._status(sql, batch_id)
            if status in (VALIDATING, IN_PROGRESS):
                self._move(sql, batch_id, CANCELLING)
            elif status not in (CANCELLING, CANCELLED):
                raise Conflict(f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable")
        return self.get(batch_id)

    def start(self, batch_id: str, *, total: int, model: str, model_version: str) -> str:
        """validating → in_progress with the validated line count; returns the status after."""
        with self.database.transaction() as sql:
            if self._status(sql, batch_id) == VALIDATING:
                sql.execute(
                    "UPDATE batches SET total = ?, model = ?, model_version = ? WHERE id = ?",
                    (total, model, model_version, batch_id),
                )
                self._move(sql, batch_id, IN_PROGRESS)
            return self._status(sql, batch_id)

    def fail(self, batch_id: str, errors: list[dict[str, Any]], *, total: int) -> None:
        """validating → failed, with the validation errors."""
        with self.database.transaction() as sql:
            sql.execute("UPDATE batches SET total = ?, errors = ? WHERE id = ?", (total, json.dumps(errors), batch_id))
            self._move(sql, batch_id, FAILED)

    def record_errors(self, batch_id: str, errors: list[dict[str, Any]]) -> None:
        """Say why a running batch must stop; the runner then finishes it as failed."""
        with self.database.transaction() as sql:
            sql.execute("UPDATE batches SET errors = ? WHERE id = ?", (json.dumps(errors), batch_id))

    def checkpoint(self, batch_id: str, progress: Progress) -> str:
        """Commit a chunk's progress (its output is already on disk); returns the current status."""
        columns = Progress.__dataclass_fields__
        with self.database.transaction() as sql:
            sql.execute(
                f"UPDATE batches SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                (*(getattr(progress, c) for c in columns), batch_id),
            )
            return self._status(sql, batch_id)

    def move(self, batch_id: str, status: str, *, when: tuple[str, ...]) -> bool:
        """Transition to `status` if the batch is in one of `when`; True if it moved."""
        with self.database.transaction() as sql:
            if self._status(sql, batch_id) not in when:
                return False
            self._move(sql, batch_id, status)
            return True

    def finish(self, sql: sqlite3.Connection, batch_id: str, status: str, *, output: bool, error: bool) -> None:
        """Final transition, inside the transaction that also records the output files."""
        sql.execute(
            "UPDATE batches SET output_published = ?, error_published = ? WHERE id = ?", (output, error, batch_id)
        )
        self._move(sql, batch_id, status)

    @staticmethod
    def _status(sql: sqlite3.Connection, batch_id: str) -> str:
        row = sql.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        return row[0]

    @staticmethod
    def _move(sql: sqlite3.Connection, batch_id: str, status: str) -> None:
        assignments, parameters = _set_status(status, int(time.time()))
        sql.execute(f"UPDATE batches SET {assignments} WHERE id = ?", (*parameters, batch_id))
