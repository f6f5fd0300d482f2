"""Uploaded and produced files: contents on disk, records in the batch database.

A file's contents are written under a temporary name, flushed to disk and renamed into
place before its record is committed, so a record always points at complete contents;
a crash in between leaves at most an unreferenced file, never a half one.

Each record names its owner (`key_id`); reads take the caller's scope (see tenancy).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from keepwarm.batches.tenancy import EVERYONE, Scope, owned_by, storage_quota_exceeded
from keepwarm.errors import NotFound, PayloadTooLarge
from keepwarm.store import ApiKey
from keepwarm.store.database import Database

_COPY_CHUNK = 1 << 20


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def file_not_found(file_id: str, param: str = "file_id") -> NotFound:
    """The one answer for a file that does not exist and for another key's file."""
    return NotFound(f"No such File object: {file_id}", param=param)


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
    return FileRecord(
        row["id"], row["filename"], row["purpose"], row["bytes"], row["created_at"], row["expires_at"]
    )


_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class FileStore:
    """Files under `<root>/files/<id>`, listed in the `files` table."""

    def __init__(self, database: Database, root: Path) -> None:
        self.database = database
        self.folder = root / "files"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.folder / file_id

    def save(
        self,
        source: IO[bytes],
        *,
        owner: ApiKey,
        filename: str,
        purpose: str,
        expires_at: int | None,
        limit: int,
        quota: int,
    ) -> FileRecord:
        """Copy `source` into a new file of `owner`'s and record it.

        413 past `limit` bytes; 429 if the owner's live files would total more than `quota`
        bytes (checked while copying, so a refused upload stops early, and again in the
        transaction that records it, so concurrent uploads cannot overshoot together).
        """
        stored = self.stored_bytes(self.database.connection(), owner.id)
        file_id = new_file_id()
        staging = self.folder / f".{file_id}.upload"
        try:
            size = _copy(source, staging, min(limit, quota - stored))
            if size > limit:
                raise PayloadTooLarge(f"The file is over the limit of {limit} bytes.", param="file")
            if stored + size > quota:
                raise storage_quota_exceeded(owner, stored, quota)
            self.place(staging, file_id)
            with self.database.transaction() as sql:
                stored = self.stored_bytes(sql, owner.id)
                if stored + size > quota:
                    raise storage_quota_exceeded(owner, stored, quota)
                self.record(sql, file_id, filename, purpose, owner.id, expires_at)
        except BaseException:
            self.path(file_id).unlink(missing_ok=True)
            raise
        finally:
            staging.unlink(missing_ok=True)
        return self.get(file_id, EVERYONE)

    def place(self, staging: Path, file_id: str) -> None:
        """Move a complete, flushed file to its final name (a no-op when already moved)."""
        if staging.exists():
            os.replace(staging, self.path(file_id))
            fsync_directory(self.folder)

    def record(
        self,
        sql: sqlite3.Connection,
        file_id: str,
        filename: str,
        purpose: str,
        key_id: int,
        expires_at: int | None = None,
    ) -> None:
        """Add a placed file's record inside the caller's transaction (idempotent)."""
        sql.execute(
            "INSERT OR IGNORE INTO files (id, filename, purpose, bytes, created_at, expires_at, key_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                file_id,
                filename,
                purpose,
                self.path(file_id).stat().st_size,
                int(time.time()),
                expires_at,
                key_id,
            ),
        )

    def get(self, file_id: str, scope: Scope) -> FileRecord:
        """The live file, if `scope` may see it (404 otherwise, the same as for no such file)."""
        return self.find(self.database.connection(), file_id, scope)

    @staticmethod
    def find(sql: sqlite3.Connection, file_id: str, scope: Scope) -> FileRecord:
        """`get` on the caller's connection, so a check and what depends on it share one transaction."""
        row = sql.execute(
            f"SELECT * FROM files WHERE id = ? AND {_LIVE} AND {owned_by(scope)}", (file_id, int(time.time()))
        ).fetchone()
        if row is None:
            raise file_not_found(file_id)
        return _record(row)

    def list(
        self, scope: Scope, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRecord], bool]:
        """One page of the files `scope` sees (newest first for `desc`), and whether more follow."""
        clauses, parameters = [_LIVE, owned_by(scope)], [int(time.time())]
        if purpose:
            clauses.append("purpose = ?")
            parameters.append(purpose)
        if after:
            cursor = self.database.query(
                f"SELECT seq FROM files WHERE id = ? AND {owned_by(scope)}", (after,)
            )
            if not cursor:
                raise file_not_found(after, param="after")
            clauses.append("seq < ?" if order == "desc" else "seq > ?")
            parameters.append(cursor[0]["seq"])
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.database.query(
            f"SELECT * FROM files WHERE {' AND '.join(clauses)} ORDER BY seq {direction} LIMIT ?",
            (*parameters, limit + 1),
        )
        return [_record(row) for row in rows[:limit]], len(rows) > limit

    @staticmethod
    def stored_bytes(sql: sqlite3.Connection, key_id: int) -> int:
        """The bytes of the key's live files."""
        query = f"SELECT COALESCE(SUM(bytes), 0) FROM files WHERE key_id = ? AND {_LIVE}"
        return sql.execute(query, (key_id, int(time.time()))).fetchone()[0]

    def expired(self) -> list[str]:
        """Files past their `expires_at` (already invisible to the API), to be removed."""
        rows = self.database.query("SELECT id FROM files WHERE expires_at <= ?", (int(time.time()),))
        return [row["id"] for row in rows]

    @staticmethod
    def forget(sql: sqlite3.Connection, file_id: str) -> None:
        """Drop the record inside the caller's transaction; `remove` the contents after it commits."""
        sql.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def remove(self, file_id: str) -> None:
        """Remove a forgotten file's contents (a crash before this leaves only an orphan)."""
        self.path(file_id).unlink(missing_ok=True)

    def open(self, file_id: str, scope: Scope) -> IO[bytes]:
        """The file's contents, opened for reading (404 if it is gone or not `scope`'s)."""
        self.get(file_id, scope)
        try:
            return self.path(file_id).open("rb")
        except FileNotFoundError:
            raise file_not_found(file_id) from None


def _copy(source: IO[bytes], target: Path, most: int) -> int:
    """Copy `source` to `target` and flush it; the bytes copied (past `most` when it stopped there)."""
    size = 0
    with target.open("wb") as handle:
        while chunk := source.read(_COPY_CHUNK):
            size += len(chunk)
            if size > most:
                return size
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return size
