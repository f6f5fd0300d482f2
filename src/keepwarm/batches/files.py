"""Uploaded and produced files: contents on disk, records in the batch database.

A file's contents are written under a temporary name, flushed to disk and renamed into
place before its record is committed, so a record always points at complete contents;
a crash in between leaves at most an unreferenced file, never a half one.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from keepwarm.store.database import Database
from keepwarm.errors import NotFound, PayloadTooLarge

_COPY_CHUNK = 1 << 20


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class FileRecord:
    """One stored file, as OpenAI's File object describes it."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def _record(row: Any) -> FileRecord:
    return FileRecord(row["id"], row["filename"], row["purpose"], row["bytes"], row["created_at"], row["expires_at"])


class FileStore:
    """Files under `<root>/files/<id>`, listed in the `files` table."""

    def __init__(self, database: Database, root: Path) -> None:
        self.database = database
        self.folder = root / "files"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.folder / file_id

    def save(self, source: IO[bytes], filename: str, purpose: str, *, limit: int, expires_at: int | None = None) -> FileRecord:
        """Copy `source` into a new file (413 past `limit` bytes) and record it."""
        file_id = new_file_id()
        staging = self.folder / f".{file_id}.upload"
        size = 0
        try:
            with staging.open("wb") as target:
                while chunk := source.read(_COPY_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"The file is over the limit of {limit} bytes.", param="file")
                    target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
            self.place(staging, file_id)
            with self.database.transaction() as sql:
                self.record(sql, file_id, filename, purpose, expires_at)
        finally:
            staging.unlink(missing_ok=True)
        return self.get(file_id)

    def place(self, staging: Path, file_id: str) -> None:
        """Move a complete, flushed file to its final name (a no-op when already moved)."""
        if staging.exists():
            os.replace(staging, self.path(file_id))
            fsync_directory(self.folder)

    def record(
        self, sql: sqlite3.Connection, file_id: str, filename: str, purpose: str, expires_at: int | None = None
    ) -> None:
        """Add a placed file's record inside the caller's transaction (idempotent)."""
        sql.execute(
            "INSERT OR IGNORE INTO files (id, filename, purpose, bytes, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, filename, purpose, self.path(file_id).stat().st_size, int(time.time()), expires_at),
        )

    def get(self, file_id: str) -> FileRecord:
        rows = self.database.query("SELECT * FROM files WHERE id = ?", (file_id,))
        if not rows or self._expired(rows[0]):
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return _record(rows[0])

    def list(self, *, purpose: str | None, after: str | None, limit: int, order: str) -> tuple[list[FileRecord], bool]:
        """One page of files (newest first for `desc`), and whether more follow."""
        clauses, parameters = ["(expires_at IS NULL OR expires_at > ?)"], [int(time.time())]
        if purpose:
            clauses.append("purpose = ?")
            parameters.append(purpose)
        if after:
            cursor = self.database.query("SELECT seq FROM files WHERE id = ?", (after,))
            if not cursor:
                raise NotFound(f"No such File object: {after}", param="after")
            clauses.append("seq < ?" if order == "desc" else "seq > ?")
            parameters.append(cursor[0]["seq"])
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.database.query(
            f"SELECT * FROM files WHERE {' AND '.join(clauses)} ORDER BY seq {direction} LIMIT ?",
            (*parameters, limit + 1),
        )
        return [_record(row) for row in rows[:limit]], len(rows) > limit

    def expired(self) -> list[str]:
        """Files past their `expires_at` (already invisible to the API), to be removed."""
        rows = self.database.query("SELECT id FROM files WHERE expires_at <= ?", (int(time.time()),))
        return [row["id"] for row in rows]

    def delete(self, file_id: str) -> None:
        """Forget the file, then remove its contents (a crash in between leaves only an orphan)."""
        with self.database.transaction() as sql:
            sql.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.path(file_id).unlink(missing_ok=True)

    def open(self, file_id: str) -> IO[bytes]:
        """The file's contents, opened for reading (404 if it is gone)."""
        self.get(file_id)
        try:
            return self.path(file_id).open("rb")
        except FileNotFoundError:
            raise NotFound(f"No such File object: {file_id}", param="file_id") from None

    @staticmethod
    def _expired(row: Any) -> bool:
        return row["expires_at"] is not None and row["expires_at"] <= time.time()
