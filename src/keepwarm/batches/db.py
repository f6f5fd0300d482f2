"""The batch database, `batches.db`: the store's `Database` (WAL, migrations) with the batch schema.

Several processes may open the same file (servers sharing a data directory): SQLite's
own locking keeps them consistent, and `Database.transaction()` takes the write lock up
front (`BEGIN IMMEDIATE`), so a read-modify-write never interleaves with another writer.
"""

from __future__ import annotations

from pathlib import Path

from keepwarm.store.database import Database
from keepwarm.store.migrations import Migration

# Each entry upgrades the schema by one version (PRAGMA user_version); append, never edit.
MIGRATIONS: tuple[Migration, ...] = (
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


def open_batch_database(path: Path) -> Database:
    """`batches.db` at `path`, migrated; every commit fsynced, as batch progress is checkpointed by it."""
    return Database(path, migrations=MIGRATIONS, synchronous="FULL")
