"""Uploaded and produced files: contents on disk, records in the batch database.

A file's contents are written under a temporary name, flushed to disk and renamed into
place before its record is committed, so a record always points at complete contents;
a crash in between leaves at most an unreferenced file, never a half one.

Each record names its owner (`key_id`); reads take the caller's scope (see tenancy).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import ColumnElement, Connection, delete, func, or_, select

from keepwarm.batches.tenancy import EVERYONE, Scope, owned_by, storage_quota_exceeded
from keepwarm.errors import NotFound, PayloadTooLarge
from keepwarm.store import ApiKey
from keepwarm.store.database import Database
from keepwarm.store.schema import files
from keepwarm.store.sql import insert_new

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


def _live() -> ColumnElement[bool]:
    return or_(files.c.expires_at.is_(None), files.c.expires_at > int(time.time()))


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
        expires_after: int | None,
        limit: int,
        quota: int,
    ) -> FileRecord:
        """Copy `source` into a new file of `owner`'s and record it, to expire `expires_after` s after.

        413 past `limit` bytes; 429 if the owner's live files would total more than `quota`
        bytes (checked while copying, so a refused upload stops early, and again in the
        transaction that records it, so concurrent uploads cannot overshoot together).
        """
        with self.database.reading() as sql:
            stored = self.stored_bytes(sql, owner.id)
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
                self.database.lock(sql, "storage", owner.id)
                stored = self.stored_bytes(sql, owner.id)
                if stored + size > quota:
                    raise storage_quota_exceeded(owner, stored, quota)
                self.record(sql, file_id, filename, purpose, owner.id, expires_after)
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
        sql: Connection,
        file_id: str,
        filename: str,
        purpose: str,
        key_id: int,
        expires_after: int | None = None,
    ) -> None:
        """Add a placed file's record inside the caller's transaction (idempotent).

        Its expiry is anchored on the `created_at` recorded here, to the second, as OpenAI's is.
        """
        created_at = int(time.time())
        values = {
            "id": file_id,
            "filename": filename,
            "purpose": purpose,
            "bytes": self.path(file_id).stat().st_size,
            "created_at": created_at,
            "expires_at": None if expires_after is None else created_at + expires_after,
            "key_id": key_id,
        }
        sql.execute(insert_new(sql, files, values))

    def get(self, file_id: str, scope: Scope) -> FileRecord:
        """The live file, if `scope` may see it (404 otherwise, the same as for no such file)."""
        with self.database.reading() as sql:
            return self.find(sql, file_id, scope)

    @staticmethod
    def find(sql: Connection, file_id: str, scope: Scope) -> FileRecord:
        """`get` on the caller's connection, so a check and what depends on it share one transaction."""
        query = select(files).where(files.c.id == file_id, _live(), owned_by(files, scope))
        row = sql.execute(query).mappings().first()
        if row is None:
            raise file_not_found(file_id)
        return _record(row)

    def list(
        self, scope: Scope, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRecord], bool]:
        """One page of the files `scope` sees (newest first for `desc`), and whether more follow."""
        query = select(files).where(_live(), owned_by(files, scope))
        if purpose:
            query = query.where(files.c.purpose == purpose)
        if after:
            cursor = self.database.query(
                select(files.c.seq).where(files.c.id == after, owned_by(files, scope))
            )
            if not cursor:
                raise file_not_found(after, param="after")
            seq = cursor[0]["seq"]
            query = query.where(files.c.seq < seq if order == "desc" else files.c.seq > seq)
        ordering = files.c.seq.desc() if order == "desc" else files.c.seq.asc()
        rows = self.database.query(query.order_by(ordering).limit(limit + 1))
        return [_record(row) for row in rows[:limit]], len(rows) > limit

    @staticmethod
    def stored_bytes(sql: Connection, key_id: int) -> int:
        """The bytes of the key's live files."""
        query = select(func.coalesce(func.sum(files.c.bytes), 0)).where(files.c.key_id == key_id, _live())
        return int(sql.execute(query).scalar_one())

    def expired(self) -> list[str]:
        """Files past their `expires_at` (already invisible to the API), to be removed."""
        rows = self.database.query(select(files.c.id).where(files.c.expires_at <= int(time.time())))
        return [row["id"] for row in rows]

    @staticmethod
    def forget(sql: Connection, file_id: str) -> None:
        """Drop the record inside the caller's transaction; `remove` the contents after it commits."""
        sql.execute(delete(files).where(files.c.id == file_id))

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
