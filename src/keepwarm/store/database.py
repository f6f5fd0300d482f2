"""The SQLite connection: WAL journal, a busy timeout, and schema migrations by user_version.

WAL lets readers (the server answering requests, `keepwarm usage`) run while one writer
commits, and with `synchronous=NORMAL` a committed transaction survives the process
being killed (it is in the WAL file; only an OS crash or power loss can lose the last
commits). Every thread gets its own connection, because sqlite3 connections must not
be used by two threads at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from keepwarm.store.migrations import MIGRATIONS, Migration

FILE_NAME = "keepwarm.db"
BUSY_TIMEOUT_MS = 10_000


class StoreError(Exception):
    """The state database cannot be used as asked (newer schema, unknown key, ...)."""


class Database:
    """One SQLite database file, migrated to the newest schema on open.

    `migrations` and `synchronous` default to the state database's; the batch database
    passes its own schema and `FULL` (every commit fsynced).
    """

    def __init__(
        self, path: Path, migrations: tuple[Migration, ...] = MIGRATIONS, synchronous: str = "NORMAL"
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        migrate(self.connection(), migrations)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Database:
        return cls(data_dir / FILE_NAME)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use `transaction()` to write)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, self.synchronous)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def query(self, statement: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """Rows of one read-only statement (a consistent snapshot) on this thread's connection."""
        return self.connection().execute(statement, parameters).fetchall()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no deadlocking upgrades)."""
        conn = self.connection()
        with _immediate(conn):
            yield conn

    def close(self) -> None:
        """Close every thread's connection (call once no thread uses the database)."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the migrations this database has not seen, atomically; return the schema version.

    The version is read under the write lock, so two processes opening a new database at
    once apply each migration exactly once.
    """
    with _immediate(conn):
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > len(migrations):
            raise StoreError(
                f"the state database is at schema version {current}, newer than this keepwarm "
                f"understands ({len(migrations)}); upgrade keepwarm"
            )
        for version, statements in enumerate(migrations[current:], start=current + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return len(migrations)
