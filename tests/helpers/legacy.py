"""SQLite files as the releases before SQLAlchemy wrote them, for the tests that carry them forward.

The statements are the migrations those releases shipped, verbatim; `legacy_file` applies
the first `version` of them and records it in `PRAGMA user_version`, as they did.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

STATE_MIGRATIONS = (
    # 1: API keys (only a hash of each secret) and usage per key, model, version and day
    (
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL UNIQUE,
            secret_hash TEXT NOT NULL,
            models TEXT,
            rpm INTEGER,
            tpm INTEGER,
            admin INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            revoked_at REAL
        )
        """,
        "CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL",
        """
        CREATE TABLE usage (
            day TEXT NOT NULL,
            key_id INTEGER NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            requests INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            cache_hits INTEGER NOT NULL,
            compute_seconds REAL NOT NULL,
            PRIMARY KEY (day, key_id, model, version)
        )
        """,
    ),
    # 2: how far each batch's usage is metered, so a chunk redone after a crash is not metered twice
    (
        """
        CREATE TABLE metered_lines (
            source TEXT PRIMARY KEY,
            through_line INTEGER NOT NULL
        )
        """,
    ),
)

BATCH_MIGRATIONS = (
    (
        """
        CREATE TABLE files (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER
        )
        """,
        """
        CREATE TABLE batches (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            input_file_id TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            metadata TEXT,
            model TEXT,
            model_version TEXT,
            errors TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            in_progress_at INTEGER,
            finalizing_at INTEGER,
            completed_at INTEGER,
            failed_at INTEGER,
            expired_at INTEGER,
            cancelling_at INTEGER,
            cancelled_at INTEGER,
            output_file_id TEXT NOT NULL,
            error_file_id TEXT NOT NULL,
            output_published INTEGER NOT NULL DEFAULT 0,
            error_published INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL DEFAULT 0,
            completed INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            tokens INTEGER NOT NULL DEFAULT 0,
            seconds REAL NOT NULL DEFAULT 0,
            next_line INTEGER NOT NULL DEFAULT 0,
            input_offset INTEGER NOT NULL DEFAULT 0,
            output_bytes INTEGER NOT NULL DEFAULT 0,
            error_bytes INTEGER NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE INDEX batches_by_status ON batches (status, seq)
        """,
    ),
    # 2: every file and batch belongs to the API key that created it (0: the anonymous caller,
    # which also owns everything made before keys were recorded)
    (
        "ALTER TABLE files ADD COLUMN key_id INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE batches ADD COLUMN key_id INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX files_by_key ON files (key_id, seq)",
        "CREATE INDEX batches_by_key ON batches (key_id, status)",
    ),
)


CACHE_TABLE = "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)"


def legacy_file(path: Path, migrations: tuple[tuple[str, ...], ...], version: int) -> sqlite3.Connection:
    """A SQLite file at `path` at schema `version` of `migrations`, open for the test to fill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for statements in migrations[:version]:
        for statement in statements:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn
