"""PostgreSQL for the tests: the server at KEEPWARM_TEST_POSTGRES_URL, or a throwaway one.

Tests never skip for want of PostgreSQL. When nothing answers at the URL (by default
the development machines' server, postgresql://postgres@127.0.0.1:5432/postgres), a
throwaway cluster is made from the installed binaries (Debian's `postgresql` package)
in a temporary folder and removed afterwards; without those binaries the tests fail
saying what to install. Each test module gets a fresh database, dropped at its end.
`ThrowawayPostgres` is also what outage tests stop and restart: never the shared server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from keepwarm.bench.process import free_port

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL = os.environ.get("KEEPWARM_TEST_POSTGRES_URL", DEFAULT_URL)
_INSTALL = (
    "the tests need PostgreSQL: set KEEPWARM_TEST_POSTGRES_URL to a server they may create databases on, "
    "or install the server binaries (Debian/Ubuntu: apt-get install postgresql) so the tests can start "
    "a throwaway one"
)


def answers(url: str) -> bool:
    """True if a PostgreSQL server accepts connections at `url`."""
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server at `server_url`; dropped afterwards."""
    name = f"keepwarm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own in a temporary folder, on a free loopback port.

    The server refuses to run as root, so as root the cluster belongs to the `postgres`
    user (made by Debian's package) and its commands run as that user.
    """

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        found = shutil.which("pg_ctl") or (binaries[-1] if binaries else None)
        if found is None:
            raise RuntimeError(_INSTALL)
        self.bin = Path(found).parent
        self.folder = Path(tempfile.mkdtemp(prefix="keepwarm-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        log = str(self.folder / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash or a failover would: sessions are cut, nothing is waited for."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases on (see the module docs)."""
    if answers(URL):
        yield URL
        return
    server = ThrowawayPostgres()
    try:
        server.start()
        yield server.url
    finally:
        server.remove()
