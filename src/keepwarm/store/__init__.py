"""Durable state in one SQLite file in the data directory: API keys and usage.

`Database` owns the file (connections, migrations); each kind of state has its own
module over it. The schema evolves only through `migrations.MIGRATIONS`.
"""

from keepwarm.store.database import Database, StoreError
from keepwarm.store.keys import ANONYMOUS, ApiKey, KeyStore
from keepwarm.store.usage import UsageEvent, UsageRow, UsageStore, usage_report

__all__ = [
    "ANONYMOUS",
    "ApiKey",
    "Database",
    "KeyStore",
    "StoreError",
    "UsageEvent",
    "UsageRow",
    "UsageStore",
    "usage_report",
]
