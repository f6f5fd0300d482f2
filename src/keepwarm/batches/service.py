"""The batch service: files, batches and the runner over one data directory, for the HTTP routes.

The routes stay thin: every rule about what a request may do (which endpoint, which
purpose, metadata limits, what may be deleted or cancelled, whose objects a key sees,
how much it may hold) lives here. Each check and the write that depends on it share
one transaction, so a file cannot be deleted while a batch is being created from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import IO, Any

from keepwarm.api.limits import RateLimiter
from keepwarm.batches.budget import TokenBudget
from keepwarm.batches.db import open_batch_database
from keepwarm.batches.files import FileRecord, FileStore
from keepwarm.batches.loop import BatchRunner, RunnerSettings
from keepwarm.batches.records import BatchRecord, BatchStore
from keepwarm.batches.tenancy import (
    EVERYONE,
    TenantLimits,
    scope_of,
    storage_quota_exceeded,
    too_many_open_batches,
)
from keepwarm.cost import Pricing
from keepwarm.engine import Engine
from keepwarm.errors import Conflict, InvalidRequest
from keepwarm.store import ApiKey, Database, KeyStore, UsageStore

ENDPOINTS = ("/v1/embeddings", "/v1/rerank")  # a rerank batch is keepwarm's extension
_WINDOW = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_WINDOW_SECONDS = 30 * 86400
_METADATA_LIMITS = (16, 64, 512)  # pairs, key length, value length (OpenAI's)


@dataclass(frozen=True)
class BatchSettings:
    """Limits and prices for batch jobs."""

    pricing: Pricing = field(default_factory=Pricing)
    max_file_bytes: int = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
    tenants: TenantLimits = field(default_factory=TenantLimits)
    runner: RunnerSettings = field(default_factory=RunnerSettings)


def window_seconds(window: str) -> int:
    """`24h` (OpenAI's only value) or any other `<n>s|m|h|d` up to 30 days, in seconds."""
    match = _WINDOW.fullmatch(window)
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
        raise InvalidRequest(
            f"metadata may hold at most {pairs} pairs, got {len(metadata)}.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > key_length or len(value) > value_length:
            raise InvalidRequest(
                f"metadata keys may be at most {key_length} characters and values {value_length}; "
                f"'{key[:80]}' is too long.",
                param="metadata",
            )


class BatchService:
    """Everything behind `/v1/files` and `/v1/batches` for one engine's data directory.

    `state` is the database of keys and usage: the runner reads each batch's key (its
    models, its TPM, whether it was revoked) and meters the batch's tokens there.
    """

    def __init__(self, engine: Engine, state: Database, settings: BatchSettings | None = None) -> None:
        self.settings = settings or BatchSettings()
        root = engine.data_dir / "batches"
        self.database = open_batch_database(state, root)
        self.files = FileStore(self.database, root)
        self.batches = BatchStore(self.database)
        self.budget = TokenBudget(RateLimiter(), self.settings.tenants.tpm_reserve)
        self.runner = BatchRunner(
            root,
            batches=self.batches,
            files=self.files,
            keys=KeyStore(state),
            usage=UsageStore(state),
            engine=engine,
            budget=self.budget,
            settings=self.settings.runner,
        )

    def use_rate_limiter(self, limiter: RateLimiter) -> None:
        """Spend batch tokens from `limiter`'s buckets: the app's, which the keys' online calls use."""
        self.budget.use_limiter(limiter)

    def start(self) -> None:
        """Start running batches (call once the engine's models are ready)."""
        self.runner.start()

    def stop(self) -> None:
        """Stop after the current chunk; unfinished work resumes at the next start."""
        self.runner.stop()

    def check_room(self, key: ApiKey, declared_bytes: int) -> None:
        """Refuse an upload before reading it when its declared size cannot fit the key's storage."""
        quota = self.settings.tenants.max_stored_bytes
        with self.database.reading() as sql:
            stored = self.files.stored_bytes(sql, key.id)
        if stored + declared_bytes > quota:
            raise storage_quota_exceeded(key, stored, quota)

    def upload(
        self, key: ApiKey, source: IO[bytes], filename: str, purpose: str, expires_after: int | None
    ) -> FileRecord:
        if purpose != "batch":
            raise InvalidRequest(f"purpose must be 'batch' on this server, got {purpose!r}.", param="purpose")
        if expires_after is not None and not 3600 <= expires_after <= _MAX_WINDOW_SECONDS:
            raise InvalidRequest(
                "expires_after[seconds] must be between 3600 and 2592000.", param="expires_after.seconds"
            )
        return self.files.save(
            source,
            owner=key,
            filename=filename,
            purpose=purpose,
            expires_after=expires_after,
            limit=self.settings.max_file_bytes,
            quota=self.settings.tenants.max_stored_bytes,
        )

    def get_file(self, key: ApiKey, file_id: str) -> FileRecord:
        return self.files.get(file_id, scope_of(key))

    def list_files(
        self, key: ApiKey, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRecord], bool]:
        return self.files.list(scope_of(key), purpose=purpose, after=after, limit=limit, order=order)

    def open_file(self, key: ApiKey, file_id: str) -> IO[bytes]:
        return self.files.open(file_id, scope_of(key))

    def delete_file(self, key: ApiKey, file_id: str) -> dict[str, Any]:
        """Delete a file no unfinished batch reads (the check and the delete are one transaction)."""
        with self.database.transaction() as sql:
            self.files.find(sql, file_id, scope_of(key))
            if self.batches.uses_file(sql, file_id):
                raise Conflict(
                    f"File {file_id} is the input of a batch that has not finished; cancel the batch first.",
                    param="file_id",
                    code="file_in_use",
                )
            self.files.forget(sql, file_id)
        self.files.remove(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    def create_batch(
        self,
        key: ApiKey,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> BatchRecord:
        """A validating batch over a file the key sees (the check and the insert are one transaction)."""
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"endpoint {endpoint!r} is not supported; batches here run {', '.join(ENDPOINTS)}.",
                param="endpoint",
            )
        seconds = window_seconds(completion_window)
        check_metadata(metadata)
        limit = self.settings.tenants.max_open_batches
        with self.database.transaction() as sql:
            self.database.lock(sql, "open batches", key.id)
            if self.files.find(sql, input_file_id, scope_of(key)).purpose != "batch":
                raise InvalidRequest(
                    f"File {input_file_id} was not uploaded with purpose 'batch'.", param="input_file_id"
                )
            if self.batches.open_count(sql, key.id) >= limit:
                raise too_many_open_batches(key, limit)
            batch_id = self.batches.insert(
                sql,
                key_id=key.id,
                input_file_id=input_file_id,
                endpoint=endpoint,
                completion_window=completion_window,
                window_seconds=seconds,
                metadata=metadata,
            )
        self.runner.wake()
        return self.batches.get(batch_id, EVERYONE)

    def get_batch(self, key: ApiKey, batch_id: str) -> BatchRecord:
        return self.batches.get(batch_id, scope_of(key))

    def list_batches(self, key: ApiKey, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        return self.batches.list(scope_of(key), after=after, limit=limit)

    def cancel(self, key: ApiKey, batch_id: str) -> BatchRecord:
        batch = self.batches.cancel(batch_id, scope_of(key))
        self.runner.wake()
        return batch

    def render(self, batch: BatchRecord) -> dict[str, Any]:
        return batch.to_openai(self.settings.pricing)
