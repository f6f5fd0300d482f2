"""The HTTP layer's access to the state store: on its own threads, never on the event loop.

SQLite calls block (a commit, a busy wait on another process's write), so every one runs
on a small dedicated pool; requests await it. A database fault becomes a retryable 503
rather than a 500 or an answer that was never metered.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from keepwarm.errors import NotReady
from keepwarm.store import Database, KeyStore, UsageStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreAccess:
    """Keys and usage, called from async code."""

    def __init__(self, db: Database, threads: int = 2) -> None:
        self.keys = KeyStore(db)
        self.usage = UsageStore(db)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="keepwarm-store")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on a store thread; a database error is a retryable 503."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, partial(function, *args))
        except sqlite3.Error as exc:
            log.error("state database error: %s", exc)
            raise NotReady(
                "The server's state database is unavailable; retry shortly.", retry_after=1
            ) from exc

    def close(self) -> None:
        """Wait for pending writes (usage of answered requests) to commit, then stop the threads."""
        self._pool.shutdown(wait=True)
