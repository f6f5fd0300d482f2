"""The embedding cache: vectors by (model version, exact token ids).

Token ids already carry everything else that shapes a vector — the text, the prompt
and the truncation — so keying on them with the model version means a cached vector can
never be served for a different model version, prompt or truncation. Vectors are kept
as their exact float32 bytes: a hit returns the bits the model produced.

In memory it is an LRU bounded in bytes. Persistent, it also keeps every vector in a
database: a SQLite file in the data directory, so a restart starts warm, or the
PostgreSQL database replicas share (`--database`), so a vector computed by one replica
is a hit on every other. The database is a cache: when it cannot be reached, a lookup
is a miss and a write is dropped, and requests go on.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sqlalchemy import select

from keepwarm.store import Database, DatabaseUnavailable
from keepwarm.store.migrations import CACHE
from keepwarm.store.schema import vectors
from keepwarm.store.sql import insert_new

log = logging.getLogger(__name__)

_ENTRY_OVERHEAD = 100  # bytes of bookkeeping per in-memory entry, counted against the budget


def cache_key(version: str, ids: np.ndarray) -> bytes:
    """Digest of the model version and the token ids."""
    return hashlib.sha256(
        version.encode() + b"\0" + np.ascontiguousarray(ids, dtype="<i8").tobytes()
    ).digest()


class EmbeddingCache:
    """Thread-safe LRU of vectors with a byte budget, optionally backed by a database.

    `location` is a SQLite file's path or a database URL.
    """

    def __init__(self, max_bytes: int, location: Path | str | None = None) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._writer: ThreadPoolExecutor | None = None
        if location is not None:
            self._db = (
                Database.sqlite(location, (CACHE,))
                if isinstance(location, Path)
                else Database(location, (CACHE,))
            )
            self._writer = ThreadPoolExecutor(1, "keepwarm-cache-writer")

    def get_many(self, keys: list[bytes]) -> list[np.ndarray | None]:
        """Vectors for the keys that are cached, None for the others."""
        found = [self._memory_get(key) for key in keys]
        missing = [key for key, data in zip(keys, found, strict=True) if data is None]
        if missing and self._db is not None:
            stored = self._query(missing)
            for key, data in stored.items():
                self._memory_put(key, data)
            found = [stored.get(key) if data is None else data for key, data in zip(keys, found, strict=True)]
        return [None if data is None else np.frombuffer(data, dtype="<f4") for data in found]

    def put_many(self, entries: list[tuple[bytes, np.ndarray]]) -> None:
        """Remember freshly computed vectors (persisted in the background)."""
        encoded = [(key, np.ascontiguousarray(vector, dtype="<f4").tobytes()) for key, vector in entries]
        for key, data in encoded:
            self._memory_put(key, data)
        if self._writer is not None and encoded:
            self._writer.submit(self._persist, encoded)

    def close(self) -> None:
        """Finish pending writes and close the database."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    def _memory_get(self, key: bytes) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def _memory_put(self, key: bytes, data: bytes) -> None:
        size = len(data) + len(key) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self._bytes += size
            while self._bytes > self.max_bytes:
                old_key, old = self._entries.popitem(last=False)
                self._bytes -= len(old) + len(old_key) + _ENTRY_OVERHEAD

    def _query(self, keys: list[bytes]) -> dict[bytes, bytes]:
        db = self._db
        try:
            rows = db.query(select(vectors).where(vectors.c.key.in_(set(keys)))) if db else []
        except DatabaseUnavailable:
            return {}  # a miss: the vectors are computed
        return {bytes(row["key"]): bytes(row["vector"]) for row in rows}

    def _persist(self, encoded: list[tuple[bytes, bytes]]) -> None:
        if self._db is None:
            return
        try:
            with self._db.transaction() as conn:
                conn.execute(insert_new(conn, vectors), [{"key": k, "vector": v} for k, v in encoded])
        except DatabaseUnavailable:
            log.warning("the embedding cache's database is unavailable; %d vectors not kept", len(encoded))
