"""The state database: SQLite in the data directory (the default) or any PostgreSQL server.

`Database` wraps one SQLAlchemy engine: a pool of connections, the group of tables
it was opened for migrated on open (see migrations), and two ways in: `query()` for
reads (one consistent snapshot) and `transaction()` for writes, plus `direct()` for the
statements every request runs (store/direct.py).

SQLite: WAL lets readers run while one writer commits, and with `synchronous=NORMAL` a
committed transaction survives the process being killed. Write transactions take the
write lock up front (`BEGIN IMMEDIATE`), so a read-modify-write never deadlocks or
interleaves with another process's.

PostgreSQL (`--database postgresql://...`): every replica opens the same database.
Connections are pooled and checked before use (a restarted server's dead connections
are replaced, not handed out), and each has a connect timeout and statement and lock
timeouts, so a request that needs the database while it is away fails within seconds
instead of hanging. Read-modify-write transactions lock the rows they change
(`for_update()`), which SQLite ignores as it holds the whole-file lock anyway.

Any failure to reach the database (refused, dropped, timed out, locked) is raised as
`DatabaseUnavailable`, a retryable 503 in every dialect's error envelope.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Executable, RowMapping, create_engine, event, exc, select, text
from sqlalchemy.engine import make_url

from keepwarm.errors import NotReady
from keepwarm.store.direct import DirectStatements, DirectTransaction
from keepwarm.store.migrations import BATCH, CACHE, STATE, Group, SchemaTooNew, migrate

FILE_NAME = "keepwarm.db"
BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5_000  # no query here takes more than milliseconds; this bounds a stuck one
LOCK_TIMEOUT_MS = 3_000
POOL_SIZE = 5
POOL_OVERFLOW = 10
POOL_TIMEOUT_S = 5
_READ = "keepwarm_read"  # execution option: a snapshot read, not a write transaction
_DRIVER_MISSING = (
    "PostgreSQL needs the psycopg driver, which is not installed: pip install 'keepwarm[cluster]' "
    "(or pip install 'psycopg[binary]')"
)


class StoreError(Exception):
    """The state database cannot be used as asked (newer schema, unknown key, bad URL, ...)."""


class DatabaseUnavailable(NotReady):
    """The database cannot be reached right now (503 with Retry-After; the caller may retry)."""

    default_code = "database_unavailable"

    def __init__(self) -> None:
        super().__init__("The server's state database is unavailable; retry shortly.", retry_after=1)


_UNREACHABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError)


class Database:
    """One database, its `groups` of tables migrated to the newest schema on open.

    `synchronous` is SQLite's (the batch file passes FULL: every commit fsynced).
    """

    def __init__(self, url: str, groups: Sequence[Group] = (STATE,), synchronous: str = "NORMAL") -> None:
        self.url = url
        self.engine = _create_engine(url, synchronous)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.path = Path(self.engine.url.database or "") if self.is_sqlite else None
        self.groups = tuple(groups)
        self._direct = DirectStatements(self.engine)
        try:
            self.migrate(groups)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Database:
        return cls.sqlite(data_dir / FILE_NAME)

    @classmethod
    def sqlite(cls, path: Path, groups: Sequence[Group] = (STATE,), synchronous: str = "NORMAL") -> Database:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}", groups, synchronous)

    @classmethod
    def open(cls, url: str | None, data_dir: Path) -> Database:
        """`url` (every group of tables in it), or by default the SQLite file in `data_dir`."""
        if not url:
            return cls.in_data_dir(data_dir)
        return cls(url, (STATE, BATCH, CACHE))

    @property
    def shared(self) -> bool:
        """True for a database opened by URL, holding every group: what replicas share."""
        return BATCH in self.groups

    def holds(self, group: Group) -> bool:
        """True if this database was opened for `group`'s tables (a URL's database holds every group)."""
        return group in self.groups

    def migrate(self, groups: Sequence[Group]) -> None:
        try:
            with self.transaction() as conn:
                for group in groups:
                    migrate(conn, group)
        except SchemaTooNew as error:
            raise StoreError(str(error)) from None

    def query(self, statement: Executable, parameters: dict[str, Any] | None = None) -> list[RowMapping]:
        """Rows of one read-only statement, as mappings (`row["column"]`)."""
        with self.reading() as conn:
            return list(conn.execute(statement, parameters).mappings())

    def scalar(self, statement: Executable) -> Any:
        """The first column of the first row of one read-only statement (None if no row)."""
        with self.reading() as conn:
            return conn.execute(statement).scalar()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for several reads from one snapshot."""
        with self._unreachable_as_503(), self.engine.connect() as conn:
            conn = conn.execution_options(**{_READ: True})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._unreachable_as_503(), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def direct(self, *, write: bool = False) -> Iterator[DirectTransaction]:
        """A transaction on the pooled driver connection, for the per-request statements (store/direct.py)."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            with self._unreachable_as_503(), self._direct.transaction(write=write) as conn:
                yield conn
        except (dbapi.OperationalError, dbapi.InterfaceError) as error:
            raise DatabaseUnavailable() from error

    def lock(self, conn: Connection, name: str, ident: int = 0) -> None:
        """Serialize transactions on `(name, ident)` (say, one key's quota) until `conn` commits.

        SQLite's write transactions are serialized already; PostgreSQL takes an advisory lock.
        """
        if not self.is_sqlite:
            conn.execute(
                select(text("pg_advisory_xact_lock(:a, :b)")),
                {"a": zlib.crc32(name.encode()) >> 1, "b": ident},
            )

    def close(self) -> None:
        """Close the pooled connections (call once no thread uses the database)."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _unreachable_as_503(self) -> Iterator[None]:
        try:
            yield
        except _UNREACHABLE as error:
            raise DatabaseUnavailable() from error


def _create_engine(url: str, synchronous: str) -> Engine:
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise StoreError(f"'{url}' is not a database URL (sqlite:///PATH or postgresql://...)") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, synchronous)
    if parsed.get_backend_name() != "postgresql":
        raise StoreError(f"unsupported database '{parsed.get_backend_name()}': use sqlite or postgresql")
    try:
        import psycopg  # noqa: F401 - only to say what to install when it is missing
    except ImportError:
        raise StoreError(_DRIVER_MISSING) from None
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
    return create_engine(
        parsed.set(drivername="postgresql+psycopg"),
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": options},
    )


def _sqlite_engine(url: str, synchronous: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(connection: Any, _record: Any) -> None:
        connection.isolation_level = None  # SQLAlchemy's begin hook below says when transactions start
        for pragma in (
            f"busy_timeout = {BUSY_TIMEOUT_MS}",
            "journal_mode = WAL",
            f"synchronous = {synchronous}",
            "foreign_keys = ON",
        ):
            connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ) else "BEGIN IMMEDIATE")

    return engine
