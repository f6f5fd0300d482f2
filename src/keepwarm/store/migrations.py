"""Schema versions: a new database is made from schema.py; an older one is stepped forward.

Each group of tables (schema.STATE, BATCH, CACHE) has a version, kept in the
`keepwarm_schema` table. A database without the group's tables gets them straight from
schema.py at the newest version; one at an older version runs the steps it has not
seen, in one transaction, under a lock (`BEGIN IMMEDIATE` on SQLite, an advisory lock on
PostgreSQL), so replicas starting together apply each step exactly once. SQLite files
made by earlier releases recorded their version in `PRAGMA user_version`; that is where
their starting version is read from.

To change the schema: change the table in schema.py AND append a step here that does
the same to an existing database; never edit a step that has shipped. The test suite
checks that a stepped-forward database has the columns of a new one.

A small runner rather than Alembic: three groups of tables that live in separate SQLite
files or one PostgreSQL database, SQLite files versioned by `user_version`, and steps
that are a line or two each; Alembic's environment, script directory and revision graph
would be more code to ship than the migrations themselves.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text, inspect, select, text

from keepwarm.store import schema
from keepwarm.store.sql import upsert

Step = Callable[[Connection], None]

_VERSIONS = MetaData()
versions = Table(
    "keepwarm_schema",
    _VERSIONS,
    Column("name", Text, primary_key=True),
    Column("version", Integer, nullable=False),
)


class SchemaTooNew(Exception):
    """The database was made by a newer keepwarm."""


@dataclass(frozen=True)
class Group:
    """Tables versioned together. `steps[v]` moves a database from version v to v + 1."""

    name: str
    metadata: MetaData
    marker: str  # a table every version has: its presence tells an old database from a new one
    steps: dict[int, Step]
    version: int

    def create(self, conn: Connection) -> None:
        self.metadata.create_all(conn, checkfirst=True)


def _add_key_columns(conn: Connection) -> None:
    for table in ("files", "batches"):
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN key_id INTEGER NOT NULL DEFAULT 0"))
    for index in schema.files.indexes | schema.batches.indexes:
        if index.name in ("files_by_key", "batches_by_key"):
            index.create(conn)


STATE = Group(
    "state",
    schema.STATE,
    marker="api_keys",
    steps={
        1: lambda conn: schema.metered_lines.create(conn),
        2: lambda conn: schema.rate_buckets.create(conn),
    },
    version=3,
)
BATCH = Group(
    "batches",
    schema.BATCH,
    marker="batches",
    steps={1: _add_key_columns, 2: lambda conn: schema.runner_lease.create(conn)},
    version=3,
)
CACHE = Group("cache", schema.CACHE, marker="vectors", steps={}, version=1)


def migrate(conn: Connection, group: Group) -> int:
    """Bring `group` to its newest version inside the caller's transaction; returns that version."""
    _lock(conn, group)
    _VERSIONS.create_all(conn, checkfirst=True)
    current = _current(conn, group)
    if current > group.version:
        raise SchemaTooNew(
            f"the {group.name} tables are at schema version {current}, newer than this keepwarm "
            f"understands ({group.version}); upgrade keepwarm"
        )
    if current == 0:
        group.create(conn)
    else:
        for version in range(current, group.version):
            group.steps[version](conn)
    if current != group.version:
        _record(conn, group)
    return group.version


def _lock(conn: Connection, group: Group) -> None:
    """Serialize migrations of `group` across processes (SQLite: the transaction already holds the lock)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(text("pg_advisory_xact_lock(:id)")), {"id": zlib.crc32(group.name.encode())})


def _current(conn: Connection, group: Group) -> int:
    recorded = conn.execute(select(versions.c.version).where(versions.c.name == group.name)).scalar()
    if recorded is not None:
        return recorded
    if not inspect(conn).has_table(group.marker):
        return 0
    if conn.dialect.name == "sqlite":  # made by a release that kept the version in user_version
        return conn.exec_driver_sql("PRAGMA user_version").scalar() or group.version
    return group.version


def _record(conn: Connection, group: Group) -> None:
    row = {"name": group.name, "version": group.version}
    conn.execute(upsert(conn, versions, row, ["name"]), row)
