"""The per-request statements (key lookup, usage commit) run on the pooled driver connection.

Every answered request reads its key and commits its usage row. Through SQLAlchemy's
`Connection` each of those costs its execution machinery (connection wrapper, begin
event, execution context, result wrapping) on top of the driver's own work, several
times the statement itself on an idle server (docs/benchmarks.md, "The per-request store work").
Here the same Core statements are compiled once per dialect by SQLAlchemy and executed
on the driver's cursor of a connection from the same pool, so pooling, PostgreSQL's
pre-ping and timeouts, SQLite's pragmas and the 503 on an unreachable database stay as
they are. Only statements whose parameters are plain numbers and strings go this way
(no type conversion is applied); everything else uses `Database.query`/`transaction`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Engine, Executable


class DirectTransaction:
    """One transaction on a pooled driver connection: see the module docs."""

    def __init__(self, cursor: Any, statements: DirectStatements) -> None:
        self._cursor = cursor
        self._statements = statements

    def execute(self, statement: Executable, parameters: Mapping[str, Any] | None = None) -> list[dict]:
        """The rows of `statement` run with `parameters`, as dicts (none for a statement without rows)."""
        sql, order, defaults = self._statements.compiled(statement)
        values = {**defaults, **(parameters or {})}
        self._cursor.execute(sql, tuple(values[name] for name in order) if order is not None else values)
        if self._cursor.description is None:
            return []
        names = [column[0] for column in self._cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]


class DirectStatements:
    """Core statements compiled once for one engine's dialect (on first use), run in driver transactions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # by the statement's id; the statement is kept with its compiled form, so the id stays its own
        self._compiled: dict[int, tuple[Executable, str, tuple[str, ...] | None, dict]] = {}

    def compiled(self, statement: Executable) -> tuple[str, tuple[str, ...] | None, dict]:
        """The SQL text for the dialect, the parameter order for a positional driver (or None), defaults."""
        known = self._compiled.get(id(statement))
        if known is None:
            compiled = statement.compile(dialect=self._engine.dialect)  # type: ignore[attr-defined]
            order = tuple(compiled.positiontup) if compiled.positional else None
            known = self._compiled[id(statement)] = (statement, compiled.string, order, dict(compiled.params))
        return known[1:]

    @contextlib.contextmanager
    def transaction(self, *, write: bool) -> Iterator[DirectTransaction]:
        """Committed when the block ends, rolled back if it raises; SQLite's write lock taken up front."""
        # closing the connection hands it back to the pool
        with (
            contextlib.closing(self._engine.raw_connection()) as connection,
            contextlib.closing(connection.cursor()) as cursor,
        ):
            try:
                if self._sqlite:  # the pool's SQLite connections are in autocommit mode (database.py)
                    cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield DirectTransaction(cursor, self)
                if self._sqlite:
                    cursor.execute("COMMIT")
                else:
                    connection.commit()
            except BaseException as error:
                self._abandon(connection, cursor, error)
                raise

    def _abandon(self, connection: Any, cursor: Any, error: BaseException) -> None:
        """Roll back; a connection the error shows is dead is dropped from the pool, not reused."""
        dbapi = self._engine.dialect.loaded_dbapi
        if isinstance(error, dbapi.Error) and self._engine.dialect.is_disconnect(error, connection, cursor):
            connection.invalidate()
            return
        with contextlib.suppress(dbapi.Error):
            if self._sqlite:
                cursor.execute("ROLLBACK")
            else:
                connection.rollback()
