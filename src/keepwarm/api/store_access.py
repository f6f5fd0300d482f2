"""The HTTP layer's access to the state store: on its own threads, never on the event loop.

Database calls block (a commit, a busy wait on another process's write, a round trip to
PostgreSQL), so every one runs on a small dedicated pool; requests await it. A database
that cannot be reached is a retryable 503 (`DatabaseUnavailable`, raised by the store),
never a 500 or an answer that was never metered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from keepwarm.store import Database, DatabaseUnavailable, KeyStore, UsageStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreAccess:
    """Keys and usage, called from async code."""

    def __init__(self, db: Database, threads: int = 4) -> None:
        self.keys = KeyStore(db)
        self.usage = UsageStore(db)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="keepwarm-store")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on a store thread; DatabaseUnavailable (503) if the database is away."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, partial(function, *args))
        except DatabaseUnavailable as error:
            log.error("state database unavailable: %s", error.__cause__)
            raise

    def close(self) -> None:
        """Wait for pending writes (usage of answered requests) to commit, then stop the threads."""
        self._pool.shutdown(wait=True)
