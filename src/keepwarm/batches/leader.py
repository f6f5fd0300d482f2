"""The leader lock: one process per data directory runs batches, the others stand by.

An advisory `flock` on `runner.lock` in the batch folder; the kernel releases it when
its holder dies however it dies, so a standing-by server takes over within its next
try (about a second) and no batch is ever run by two processes at once.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from types import TracebackType
from typing import IO


class LeaderLock:
    """`with LeaderLock(root) as lock:` then `lock.try_acquire()` until it is True; leaving releases it."""

    def __init__(self, root: Path) -> None:
        self.path = root / "runner.lock"
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> LeaderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("ab")
        return self

    def try_acquire(self) -> bool:
        """Become the leader if no other process is; never blocks."""
        assert self._handle is not None, "use LeaderLock as a context manager"
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None
