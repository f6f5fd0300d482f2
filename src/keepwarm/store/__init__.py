"""Durable state behind one interface: SQLite in the data directory, or a PostgreSQL database.

`Database` owns the connection pool and the migrations; each kind of state has its own
module over it (keys, usage, rate-limit buckets). The tables are defined once, in
`schema`, for both backends; they change only through `migrations`.
"""

from keepwarm.store.database import Database, DatabaseUnavailable, StoreError
from keepwarm.store.keys import ANONYMOUS, ApiKey, KeyStore
from keepwarm.store.usage import UsageEvent, UsageRow, UsageStore, usage_report

__all__ = [
    "ANONYMOUS",
    "ApiKey",
    "Database",
    "DatabaseUnavailable",
    "KeyStore",
    "StoreError",
    "UsageEvent",
    "UsageRow",
    "UsageStore",
    "usage_report",
]
