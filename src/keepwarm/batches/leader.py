"""The runner's lease: one process among all that share the batch tables runs batches.

A row in `runner_lease` names the holder and when its lease ends. The holder renews it
every `ttl / 4` seconds, on a thread of normal CPU priority (started by `start()` from
the server's main thread: the runner's own threads run at the lowest priority, and a
starved renewal would hand the lease over for no reason). A process that stops cleanly
gives it up at once; one that dies (`kill -9`, a lost machine) simply stops renewing,
so a standing-by replica takes over within `ttl` seconds. It works the same on SQLite (servers sharing a data
directory) and on PostgreSQL (replicas on several machines).

The lease is also a fence: every transaction that records a batch's progress or status
first checks, under a row lock, that this process still holds it (`fence`). A runner
that lost it (it stalled past its lease, or could not reach the database while another
took over) has its next commit refused with `LeaseLost` and stands by again, so two
processes can never both commit work on one batch. Lease times are wall-clock seconds:
replicas' clocks must agree to well within `ttl` (NTP does).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy import Connection, select, update

from keepwarm.store import Database, DatabaseUnavailable
from keepwarm.store.schema import runner_lease
from keepwarm.store.sql import insert_new

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
_NAME = "batch-runner"


class LeaseLost(Exception):
    """Another process holds the runner's lease now; this one must stop working on batches."""


class Lease:
    """`start()`, then `try_acquire()` until True; the lease then renews itself until `release()`."""

    def __init__(self, database: Database, ttl: float = LEASE_SECONDS) -> None:
        self.database = database
        self.ttl = ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held = threading.Event()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="keepwarm-lease", daemon=True)

    def start(self) -> None:
        """Start the renewing thread (call from a thread of normal priority)."""
        self._renewer.start()

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; never waits for another holder."""
        now = time.time()
        with self.database.transaction() as conn:
            conn.execute(
                insert_new(conn, runner_lease, {"name": _NAME, "holder": self.holder, "expires_at": 0})
            )
            holder, expires_at = self._locked(conn)
            if holder != self.holder and expires_at > now:
                return False
            self._extend(conn, now)
        self._held.set()
        return True

    def fence(self, conn: Connection) -> None:
        """Raise LeaseLost unless this process holds the lease (call inside the transaction it guards)."""
        holder, expires_at = self._locked(conn)
        if holder != self.holder or expires_at <= time.time():
            raise LeaseLost(f"the batch runner's lease is held by {holder}")

    def release(self) -> None:
        """Give the lease up, so a standing-by process takes over at once."""
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        if not self._held.is_set():
            return
        self._held.clear()
        try:
            with self.database.transaction() as conn:
                mine = (runner_lease.c.name == _NAME, runner_lease.c.holder == self.holder)
                conn.execute(update(runner_lease).where(*mine).values(expires_at=0))
        except DatabaseUnavailable:
            log.warning("could not give up the batch runner's lease; it expires in %.0fs", self.ttl)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            if not self._held.is_set():
                continue
            try:
                with self.database.transaction() as conn:
                    self.fence(conn)
                    self._extend(conn, time.time())
            except LeaseLost:
                log.warning("the batch runner's lease was taken over; standing by")
                self._held.clear()
            except DatabaseUnavailable:
                log.warning("cannot renew the batch runner's lease: the database is unavailable")

    def _locked(self, conn: Connection) -> tuple[str, float]:
        query = select(runner_lease.c.holder, runner_lease.c.expires_at).where(runner_lease.c.name == _NAME)
        row = conn.execute(query.with_for_update()).one()
        return row.holder, row.expires_at

    def _extend(self, conn: Connection, now: float) -> None:
        values = {"holder": self.holder, "expires_at": now + self.ttl}
        conn.execute(update(runner_lease).where(runner_lease.c.name == _NAME).values(values))
