"""The batch tables' database: the state database when it was given by URL, else `batches/batches.db`.

With `--database` (PostgreSQL) every replica keeps its files' and batches' records in
the one shared database, beside the keys. Without it, the batch tables keep their own
SQLite file in the batch folder, as they always have, with every commit fsynced, as
batch progress is checkpointed by it. The tables themselves are schema.BATCH either way.
"""

from __future__ import annotations

from pathlib import Path

from keepwarm.store import Database
from keepwarm.store.migrations import BATCH


def open_batch_database(state: Database, root: Path) -> Database:
    """Where the batch tables live, migrated."""
    if state.holds(BATCH):
        return state
    return Database.sqlite(root / "batches.db", (BATCH,), synchronous="FULL")
