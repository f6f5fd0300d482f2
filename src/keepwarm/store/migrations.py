"""The schema, as an append-only list of migrations.

Migration N (1-based) moves a database from `PRAGMA user_version` N-1 to N, inside one
transaction. To change the schema, APPEND a tuple of SQL statements; never edit or
reorder one that has shipped, since existing databases have already applied it.
"""

from __future__ import annotations

Migration = tuple[str, ...]

MIGRATIONS: tuple[Migration, ...] = (
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
