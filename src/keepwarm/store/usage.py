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

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, func, literal, or_, select

from keepwarm.cost import Pricing
from keepwarm.store.database import Database
from keepwarm.store.direct import DirectTransaction
from keepwarm.store.schema import api_keys, metered_lines, usage
from keepwarm.store.sql import upsert


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


_COUNTS = ("requests", "tokens", "cache_hits", "compute_seconds")
_ROW_KEY = ("day", "key_id", "model", "version")
_COLUMNS = _ROW_KEY + _COUNTS


class UsageStore:
    """Record answered requests and report them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, event: UsageEvent, check: Callable[[DirectTransaction], None] | None = None) -> None:
        """Add one answered request; committed (durable against a process kill) on return.

        On the driver (`Database.direct`): every answered request runs this before its
        answer. `check` runs first in the same transaction; if it raises, nothing is recorded
        (the HTTP layer checks there that the caller's key is still what it was).
        """
        statement = upsert(self.db.engine.dialect.name, usage, _COLUMNS, _ROW_KEY, add=_COUNTS)
        with self.db.direct(write=True) as conn:
            if check is not None:
                check(conn)
            conn.execute(statement, _row_values([event])[0])

    def record_lines(self, source: str, events: Sequence[tuple[int, UsageEvent]]) -> None:
        """Add answered requests numbered by line under `source` (a batch id), each line at most once.

        Lines come in increasing order across calls; any at or below the highest line
        already metered for `source` was metered by an earlier call and is skipped.
        """
        with self.db.transaction() as conn:
            query = select(metered_lines.c.through_line).where(metered_lines.c.source == source)
            through = conn.execute(query.with_for_update()).scalar() or 0
            fresh = [(line, event) for line, event in events if line > through]
            if not fresh:
                return
            _add(conn, [event for _, event in fresh])
            highest = max(line for line, _ in fresh)
            row = {"source": source, "through_line": highest}
            conn.execute(upsert(conn, metered_lines, row, ["source"]), row)

    def report(
        self, since: date | None = None, until: date | None = None, key: str | None = None
    ) -> list[UsageRow]:
        """Rows between two UTC days (inclusive), optionally for one key (name or id)."""
        name = func.coalesce(api_keys.c.name, literal("(no key)")).label("key_name")
        query = (
            select(usage.c.day, usage.c.key_id, name, usage.c.model, usage.c.version)
            .add_columns(*(usage.c[count] for count in _COUNTS))
            .select_from(usage.outerjoin(api_keys, api_keys.c.id == usage.c.key_id))
            .order_by(usage.c.day, name, usage.c.model, usage.c.version)
        )
        if since:
            query = query.where(usage.c.day >= since.isoformat())
        if until:
            query = query.where(usage.c.day <= until.isoformat())
        if key is not None:
            query = query.where(or_(api_keys.c.name == key, api_keys.c.prefix == key))
        return [UsageRow(**row) for row in self.db.query(query)]


def _add(conn: Connection, events: Sequence[UsageEvent]) -> None:
    """Add events to their (day, key, model, version) rows, in one upsert executed per row."""
    conn.execute(upsert(conn, usage, _COLUMNS, _ROW_KEY, add=_COUNTS), _row_values(events))


def _row_values(events: Sequence[UsageEvent]) -> list[dict[str, Any]]:
    """The events summed per (day, key, model, version) row: the upsert's parameters, one dict per row."""
    rows: dict[tuple[str, int, str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for event in events:
        totals = rows[(event.day, event.key_id, event.model, event.version)]
        totals[0] += 1
        totals[1] += event.tokens
        totals[2] += event.cache_hits
        totals[3] += event.compute_seconds
    return [dict(zip(_COLUMNS, (*row, *totals), strict=True)) for row, totals in sorted(rows.items())]


def usage_report(rows: list[UsageRow], pricing: Pricing) -> dict[str, Any]:
    """Rows with their cost, and totals: the shape of `keepwarm usage --json` and `/admin/usage`."""
    data = [{**asdict(row), "cost": round(pricing.cost(row.tokens, row.compute_seconds), 6)} for row in rows]
    total = {name: sum(row[name] for row in data) for name in ("requests", "tokens", "cache_hits")}
    total |= {name: round(sum(row[name] for row in data), 6) for name in ("compute_seconds", "cost")}
    return {"object": "list", "data": data, "total": total, "pricing": asdict(pricing)}
