"""The batch service: files, jobs and the runner over one data directory, for the HTTP routes.

The routes stay thin: every rule about what a request may do (which endpoint, which
purpose, metadata limits, what may be deleted or cancelled) lives here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import IO, Any

from keepwarm.batches.db import open_batch_database
from keepwarm.batches.files import FileRecord, FileStore
from keepwarm.batches.jobs import BatchRecord, JobStore
from keepwarm.batches.runner import BatchRunner, RunnerSettings
from keepwarm.cost import Pricing
from keepwarm.engine import Engine
from keepwarm.errors import Conflict, InvalidRequest

ENDPOINTS = ("/v1/embeddings",)
_WINDOW = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_WINDOW_SECONDS = 30 * 86400
_METADATA_LIMITS = (16, 64, 512)  # pairs, key length, value length (OpenAI's)


@dataclass(frozen=True)
class BatchSettings:
    """Limits and prices for batch jobs."""

    pricing: Pricing = Pricing()
    max_file_bytes: int = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
    runner: RunnerSettings = RunnerSettings()


def window_seconds(window: str) -> int:
    """`24h` (OpenAI's only value) or any other `<n>s|m|h|d` up to 30 days, in seconds."""
    match = _WINDOW.match(window)
    seconds = int(match[1]) * _UNIT_SECONDS[match[2]] if match else 0
    if not 0 < seconds <= _MAX_WINDOW_SECONDS:
        raise InvalidRequest(
            f"completion_window must be '24h' (or a duration like '90m', up to 30d), got {window!r}.",
            param="completion_window",
        )
    return seconds


def check_metadata(metadata: dict[str, str] | None) -> None:
    pairs, key_length, value_length = _METADATA_LIMITS
    if metadata is None:
        return
    if len(metadata) > pairs:
        raise InvalidRequest(f"metadata may hold at most {pairs} pairs, got {len(metadata)}.", param="metadata")
    for key, value in metadata.items():
        if len(key) > key_length or len(value) > value_length:
            raise InvalidRequest(
                f"metadata keys may be at most {key_length} characters and values {value_length}; "
                f"'{key[:80]}' is too long.",
                param="metadata",
            )


class BatchService:
    """Everything behind `/v1/files` and `/v1/batches` for one engine's data directory."""

    def __init__(self, engine: Engine, settings: BatchSettings | None = None) -> None:
        self.settings = settings or BatchSettings()
        root = engine.data_dir / "batches"
        database = open_batch_database(root / "batches.db")
        self.files = FileStore(database, root)
        self.jobs = JobStore(database)
        self.runner = BatchRunner(root, self.jobs, self.files, engine, self.settings.runner)

    def start(self) -> None:
        """Start running batches (call once the engine's models are ready)."""
        self.runner.start()

    def stop(self) -> None:
        """Stop after the current chunk; unfinished work resumes at the next start."""
        self.runner.stop()

    def upload(self, source: IO[bytes], filename: str, purpose: str, expires_after: int | None) -> FileRecord:
        if purpose != "batch":
            raise InvalidRequest(f"purpose must be 'batch' on this server, got {purpose!r}.", param="purpose")
        expires_at = None
        if expires_after is not None:
            if not 3600 <= expires_after <= _MAX_WINDOW_SECONDS:
                raise InvalidRequest(
                    "expires_after[seconds] must be between 3600 and 2592000.", param="expires_after.seconds"
                )
            expires_at = int(time.time()) + expires_after
        return self.files.save(source, filename, purpose, limit=self.settings.max_file_bytes, expires_at=expires_at)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        self.files.get(file_id)
        if self.jobs.uses_file(file_id):
            raise Conflict(
                f"File {file_id} is the input of a batch that has not finished; cancel the batch first.",
                param="file_id", code="file_in_use",
            )
        self.files.delete(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def create_batch(
        self, *, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str] | None
    ) -> BatchRecord:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"endpoint {endpoint!r} is not supported; this server runs batches for {', '.join(ENDPOINTS)}.",
                param="endpoint",
            )
        seconds = window_seconds(completion_window)
        check_metadata(metadata)
        if self.files.get(input_file_id).purpose != "batch":
            raise InvalidRequest(f"File {input_file_id} was not uploaded with purpose 'batch'.", param="input_file_id")
        batch = self.jobs.create(
            input_file_id=input_file_id, endpoint=endpoint, completion_window=completion_window,
            window_seconds=seconds, metadata=metadata,
        )
        self.runner.wake()
        return batch

    def cancel(self, batch_id: str) -> BatchRecord:
        batch = self.jobs.cancel(batch_id)
        self.runner.wake()
        return batch

    def render(self, batch: BatchRecord) -> dict[str, Any]:
        return batch.to_openai(self.settings.pricing)
