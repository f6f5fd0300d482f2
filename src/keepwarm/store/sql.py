"""The two statements SQLite and PostgreSQL spell alike but SQLAlchemy builds per dialect: upserts."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _dialect_insert(dialect: str, table: Table) -> Any:
    """The INSERT of `dialect` (the one with ON CONFLICT clauses): PostgreSQL's, else SQLite's."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def _insert(conn: Connection, table: Table, values: Mapping[str, Any] | None) -> Any:
    statement = _dialect_insert(conn.dialect.name, table)
    return statement if values is None else statement.values(dict(values))


def upsert(
    conn: Connection | str, table: Table, columns: Iterable[str], keys: Iterable[str], add: Iterable[str] = ()
) -> Any:
    """Insert a row of `columns`; on a conflict over `keys`, set the other columns (or add to `add` ones).

    The values are the parameters the statement is executed with. The statement is built
    once per dialect and shape: usage metering upserts a row for every answered request,
    and building (and keying for SQLAlchemy's compiled cache) a fresh statement each time
    was most of that request's database time. `conn` is the connection it is for, or its
    dialect's name (for `Database.direct`, which runs it on the driver).
    """
    dialect = conn if isinstance(conn, str) else conn.dialect.name
    return _upsert(dialect, table, tuple(columns), tuple(keys), frozenset(add))


@functools.cache
def _upsert(
    dialect: str, table: Table, columns: tuple[str, ...], keys: tuple[str, ...], add: frozenset[str]
) -> Any:
    statement = _dialect_insert(dialect, table)
    changes = {
        column: table.c[column] + statement.excluded[column] if column in add else statement.excluded[column]
        for column in columns
        if column not in keys
    }
    return statement.on_conflict_do_update(index_elements=list(keys), set_=changes)


def insert_new(conn: Connection, table: Table, values: Mapping[str, Any] | None = None) -> Any:
    """Insert `values` (or the rows executed with it) unless a row with the same unique key exists."""
    return _insert(conn, table, values).on_conflict_do_nothing()
