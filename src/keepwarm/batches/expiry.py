"""Time limits: a batch's completion window, and files past their `expires_after`."""

from __future__ import annotations

import time

from keepwarm.batches.files import FileStore
from keepwarm.batches.records import BatchRecord, BatchStatus, BatchStore


def past_window(batch: BatchRecord) -> bool:
    """True once a batch that has not reached finalizing is past its completion window."""
    return (
        batch.status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS) and time.time() >= batch.expires_at
    )


def remove_expired_files(files: FileStore) -> None:
    """Delete files past their expiry (already invisible to the API), except inputs of running batches.

    A running batch reads its input to the end; its file goes once the batch has finished.
    """
    for file_id in files.expired():
        with files.database.transaction() as sql:
            in_use = BatchStore.uses_file(sql, file_id)
            if not in_use:
                files.forget(sql, file_id)
        if not in_use:
            files.remove(file_id)
