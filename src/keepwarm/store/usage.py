"""Usage metering: requests, tokens, cache hits and compute time per key, model, version and day.

One row per (UTC day, key, model, version), updated in place by each answered request,
so the table stays small however much traffic there is. The HTTP layer commits the
update before it sends the response: an answered request is never missing from usage,
even if the process is killed right after.

Batch requests are metered by line number under their batch's id (`record_lines`): the
highest line metered is kept with the usage in one transaction, so a chunk the batch
runner redoes after a crash (its output was never checkpointed) is not metered again.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from keepwarm.cost import Pricing
from keepwarm.store.database import Database


@dataclass(frozen=True)
class UsageEvent:
    """One answered request."""

    key_id: int
    model: str
    version: str
    tokens: int
    cache_hits: int = 0
    compute_seconds: float = 0.0
    at: float = field(default_factory=time.time)

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).date().isoformat()


@dataclass(frozen=True)
class UsageRow:
    """Usage of one key on one model version on one day."""

    day: str
    key_id: int
    key_name: str
    model: str
    version: str
    requests: int
    tokens: int
    cache_hits: int
    compute_seconds: float


_UPSERT = """
INSERT INTO usage (day, key_id, model, version, requests, tokens, cache_hits, compute_seconds)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, key_id, model, version) DO UPDATE SET
    requests = requests + excluded.requests,
    tokens = tokens + excluded.tokens,
    cache_hits = cache_hits + excluded.cache_hits,
    compute_seconds = compute_seconds + excluded.compute_seconds
"""

_METERED_THROUGH = "SELECT through_line FROM metered_lines WHERE source = ?"

_REPORT = """
SELECT u.day, u.key_id, COALESCE(k.name, '(no key)') AS key_name, u.model, u.version,
       u.requests, u.tokens, u.cache_hits, u.compute_seconds
FROM usage u LEFT JOIN api_keys k ON k.id = u.key_id
WHERE u.day >= ? AND u.day <= ? AND (? IS NULL OR k.name = ? OR k.prefix = ?)
ORDER BY u.day, key_name, u.model, u.version
"""


class UsageStore:
    """Record answered requests and report them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, event: UsageEvent) -> None:
        """Add one answered request; committed (durable against a process kill) on return."""
        with self.db.transaction() as conn:
            _add(conn, [event])

    def record_lines(self, source: str, events: Sequence[tuple[int, UsageEvent]]) -> None:
        """Add answered requests numbered by line under `source` (a batch id), each line at most once.

        Lines come in increasing order across calls; any at or below the highest line
        already metered for `source` was metered by an earlier call and is skipped.
        """
        with self.db.transaction() as conn:
            metered = conn.execute(_METERED_THROUGH, (source,)).fetchone()
            through = metered[0] if metered else 0
            fresh = [(line, event) for line, event in events if line > through]
            if not fresh:
                return
            _add(conn, [event for _, event in fresh])
            conn.execute(
                "INSERT INTO metered_lines (source, through_line) VALUES (?, ?) "
                "ON CONFLICT (source) DO UPDATE SET through_line = excluded.through_line",
                (source, max(line for line, _ in fresh)),
            )

    def report(
        self, since: date | None = None, until: date | None = None, key: str | None = None
    ) -> list[UsageRow]:
        """Rows between two UTC days (inclusive), optionally for one key (name or id)."""
        first = since.isoformat() if since else "0000-00-00"
        last = until.isoformat() if until else "9999-99-99"
        rows = self.db.connection().execute(_REPORT, (first, last, key, key, key)).fetchall()
        return [UsageRow(**dict(row)) for row in rows]


def _add(conn: sqlite3.Connection, events: Sequence[UsageEvent]) -> None:
    """Add events to their (day, key, model, version) rows, one upsert per row."""
    rows: dict[tuple[str, int, str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for event in events:
        totals = rows[(event.day, event.key_id, event.model, event.version)]
        totals[0] += 1
        totals[1] += event.tokens
        totals[2] += event.cache_hits
        totals[3] += event.compute_seconds
    conn.executemany(_UPSERT, [(*row, *totals) for row, totals in rows.items()])


def usage_report(rows: list[UsageRow], pricing: Pricing) -> dict[str, Any]:
    """Rows with their cost, and totals: the shape of `keepwarm usage --json` and `/admin/usage`."""
    data = [{**asdict(row), "cost": round(pricing.cost(row.tokens, row.compute_seconds), 6)} for row in rows]
    total = {name: sum(row[name] for row in data) for name in ("requests", "tokens", "cache_hits")}
    total |= {name: round(sum(row[name] for row in data), 6) for name in ("compute_seconds", "cost")}
    return {"object": "list", "data": data, "total": total, "pricing": asdict(pricing)}
