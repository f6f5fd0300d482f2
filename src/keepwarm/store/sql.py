"""The two statements SQLite and PostgreSQL spell alike but SQLAlchemy builds per dialect: upserts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(conn: Connection, table: Table, values: Mapping[str, Any] | None) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement if values is None else statement.values(dict(values))


def upsert(
    conn: Connection, table: Table, values: Mapping[str, Any], keys: list[str], add: Iterable[str] = ()
) -> Any:
    """Insert `values`, or on a conflict over `keys` set the other columns (or add to the `add` ones)."""
    statement = _insert(conn, table, values)
    added = set(add)
    changes = {
        column: table.c[column] + statement.excluded[column]
        if column in added
        else statement.excluded[column]
        for column in values
        if column not in keys
    }
    return statement.on_conflict_do_update(index_elements=keys, set_=changes)


def insert_new(conn: Connection, table: Table, values: Mapping[str, Any] | None = None) -> Any:
    """Insert `values` (or the rows executed with it) unless a row with the same unique key exists."""
    return _insert(conn, table, values).on_conflict_do_nothing()
