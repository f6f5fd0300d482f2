"""The embedding cache: vectors by (model version, exact token ids).

Token ids already carry everything else that shapes a vector — the text, the prompt
and the truncation — so keying on them with the model version means a cached vector can
never be served for a different model version, prompt or truncation. Vectors are kept
as their exact float32 bytes: a hit returns the bits the model produced.

In memory it is an LRU bounded in bytes; with a path it also keeps every vector in a
SQLite file in the data directory, so a restart starts warm.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_ENTRY_OVERHEAD = 100  # bytes of bookkeeping per in-memory entry, counted against the budget


def cache_key(version: str, ids: np.ndarray, type_ids: np.ndarray | None = None) -> bytes:
    """Digest of the model version and the token ids (and a pair's segment ids, which also shape its row)."""
    digest = hashlib.sha256(version.encode() + b"\0" + np.ascontiguousarray(ids, dtype="<i8").tobytes())
    if type_ids is not None:
        digest.update(b"\1" + np.ascontiguousarray(type_ids, dtype="<i8").tobytes())
    return digest.digest()


class EmbeddingCache:
    """Thread-safe LRU of vectors with a byte budget, optionally backed by SQLite."""

    def __init__(self, max_bytes: int, path: Path | None = None) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)"
            )
            self._writer = ThreadPoolExecutor(1, "keepwarm-cache-writer")

    def get_many(self, keys: list[bytes]) -> list[np.ndarray | None]:
        """Vectors for the keys that are cached, None for the others."""
        found: list[np.ndarray | None] = []
        for key in keys:
            data = self._memory_get(key)
            if data is None and self._db is not None:
                row = self._query(key)
                if row is not None:
                    data = row
                    self._memory_put(key, data)
            found.append(None if data is None else np.frombuffer(data, dtype="<f4"))
        return found

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
            with self._lock:
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

    def _query(self, key: bytes) -> bytes | None:
        with self._lock:
            if self._db is None:
                return None
            row = self._db.execute("SELECT vector FROM vectors WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _persist(self, encoded: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            if self._db is None:
                return
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", encoded)
            self._db.execute("COMMIT")
