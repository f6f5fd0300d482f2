"""The one schema definition, as SQLAlchemy Core tables, for SQLite and PostgreSQL alike.

Tables come in three groups, each with its own schema version (see migrations): the
state (keys, usage, rate-limit buckets), the batch jobs (files, batches, the runner's
lease) and the embedding cache. With SQLite in the data directory each group keeps
its own file, as it always has (`keepwarm.db`, `batches/batches.db`, `cache.sqlite`);
with one database URL (PostgreSQL) every group lives in that one database.

Types are chosen to mean the same on both backends: `Double` for seconds (PostgreSQL's
`REAL` is only 4 bytes), `BigInteger` for counters and byte sizes, integers for flags
(the columns SQLite databases made by earlier releases already hold).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)

STATE = MetaData()
BATCH = MetaData()
CACHE = MetaData()

api_keys = Table(
    "api_keys",
    STATE,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False, unique=True),
    Column("secret_hash", Text, nullable=False),
    Column("models", Text),  # a JSON list of names; NULL: every served model
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("admin", Integer, nullable=False, server_default=text("0")),
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double),
)
_ACTIVE = text("revoked_at IS NULL")
Index("api_keys_active_name", api_keys.c.name, unique=True, sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)

usage = Table(
    "usage",
    STATE,
    Column("day", Text, nullable=False),
    Column("key_id", Integer, nullable=False),
    Column("model", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("cache_hits", BigInteger, nullable=False),
    Column("compute_seconds", Double, nullable=False),
    PrimaryKeyConstraint("day", "key_id", "model", "version"),
)

# how far each batch's usage is metered, so a chunk redone after a crash is not metered twice
metered_lines = Table(
    "metered_lines",
    STATE,
    Column("source", Text, primary_key=True),
    Column("through_line", BigInteger, nullable=False),
)

# per-key token buckets shared by every replica (see api/limits.py)
rate_buckets = Table(
    "rate_buckets",
    STATE,
    Column("key_id", Integer, nullable=False),
    Column("kind", Text, nullable=False),  # "requests" | "tokens"
    Column("capacity", Double, nullable=False),
    Column("level", Double, nullable=False),
    Column("updated", Double, nullable=False),  # wall-clock seconds: replicas share it
    PrimaryKeyConstraint("key_id", "kind"),
)

files = Table(
    "files",
    BATCH,
    Column("seq", Integer, primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("filename", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("key_id", Integer, nullable=False, server_default=text("0")),
    sqlite_autoincrement=True,
)
Index("files_by_key", files.c.key_id, files.c.seq)

_TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
_COUNTERS = ("total", "completed", "failed", "tokens")
_OFFSETS = ("next_line", "input_offset", "output_bytes", "error_bytes")
batches = Table(
    "batches",
    BATCH,
    Column("seq", Integer, primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("input_file_id", Text, nullable=False),
    Column("completion_window", Text, nullable=False),
    Column("metadata", Text),
    Column("model", Text),
    Column("model_version", Text),
    Column("errors", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    *(Column(name, BigInteger) for name in _TIMESTAMPS),
    Column("output_file_id", Text, nullable=False),
    Column("error_file_id", Text, nullable=False),
    Column("output_published", Integer, nullable=False, server_default=text("0")),
    Column("error_published", Integer, nullable=False, server_default=text("0")),
    *(Column(name, BigInteger, nullable=False, server_default=text("0")) for name in _COUNTERS),
    Column("seconds", Double, nullable=False, server_default=text("0")),
    *(Column(name, BigInteger, nullable=False, server_default=text("0")) for name in _OFFSETS),
    Column("key_id", Integer, nullable=False, server_default=text("0")),
    sqlite_autoincrement=True,
)
Index("batches_by_status", batches.c.status, batches.c.seq)
Index("batches_by_key", batches.c.key_id, batches.c.status)

# who runs batches: one holder at a time, until `expires_at` unless renewed (see batches/leader.py)
runner_lease = Table(
    "runner_lease",
    BATCH,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires_at", Double, nullable=False),
)

vectors = Table(
    "vectors",
    CACHE,
    Column("key", LargeBinary, primary_key=True),  # see engine/cache.py: digest of version and token ids
    Column("vector", LargeBinary, nullable=False),
)
