"""A batch's output and error files while it runs, and the lines that go into them.

Each file is append-only and flushed to disk after every chunk; the database records
how many bytes of it are committed. Reopening truncates to that length, so lines
written by a chunk whose checkpoint never committed (the process was killed in
between) vanish, and the chunk runs again: every request appears exactly once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson


class PartialFile:
    """An append-only file cut back to its committed length when opened."""

    def __init__(self, path: Path, committed: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("r+b" if path.exists() else "w+b")
        self._handle.truncate(committed)
        self._handle.seek(committed)
        self.size = committed

    def append(self, data: bytes) -> int:
        """Write `data` durably; returns the new committed-to-be length."""
        if data:
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.size += len(data)
        return self.size

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    document = {
        "id": f"batch_req_{secrets.token_hex(16)}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def response_line(custom_id: str, status_code: int, body: dict[str, Any]) -> bytes:
    """A request that ran: its HTTP status and the body `/v1/embeddings` would have answered."""
    response = {"status_code": status_code, "request_id": f"req_{secrets.token_hex(16)}", "body": body}
    return _line(custom_id, response, None)


def unexecuted_line(custom_id: str, code: str, message: str) -> bytes:
    """A request that never ran (the batch was cancelled or expired first)."""
    return _line(custom_id, None, {"code": code, "message": message})


def partial_path(work: Path, batch_id: str, kind: str) -> Path:
    """Where a running batch's `output` or `error` file grows until it is published."""
    return work / f"{batch_id}.{kind}.jsonl"
