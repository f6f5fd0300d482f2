"""Rate-limit buckets in the database, so every replica spends from the same ones.

One row per (key, limit kind). A caller takes the row under a row lock (`SELECT ... FOR
UPDATE` on PostgreSQL; SQLite's write lock), changes it and commits: replicas admitting
the same key's requests at once queue on that row, so together they never spend more
than the bucket holds. What a bucket means (capacity, refill) is api/limits.py's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from sqlalchemy import select, update

from keepwarm.store.database import Database
from keepwarm.store.schema import rate_buckets
from keepwarm.store.sql import insert_new


@dataclass
class BucketRow:
    capacity: float
    level: float
    updated: float  # wall-clock seconds (time.time()), the one clock replicas share


class BucketStore:
    """The `rate_buckets` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.contextmanager
    def locked(self, key_id: int, kind: str, new: BucketRow) -> Iterator[BucketRow]:
        """The key's bucket (`new` if it has none yet), locked; what the block leaves in it is committed.

        If the block raises, nothing is written.
        """
        where = (rate_buckets.c.key_id == key_id, rate_buckets.c.kind == kind)
        with self.db.transaction() as conn:
            conn.execute(insert_new(conn, rate_buckets, {"key_id": key_id, "kind": kind, **asdict(new)}))
            row = conn.execute(select(rate_buckets).where(*where).with_for_update()).mappings().one()
            bucket = BucketRow(row["capacity"], row["level"], row["updated"])
            yield bucket
            conn.execute(update(rate_buckets).where(*where).values(**asdict(bucket)))
