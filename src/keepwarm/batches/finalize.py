"""Finishing a batch: list what never ran, then publish the output and error files.

A batch that is cancelled, expires or fails mid-run gets one error-file line per
request that never ran (`batch_cancelled`, `batch_expired`, `batch_failed`), so between
its two files every `custom_id` appears exactly once. Publishing moves the committed
part of each file into the file store, owned by the batch's key, in the same
transaction as the batch's final status.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from keepwarm.batches.files import FileStore
from keepwarm.batches.output import PartialFile, partial_path, unexecuted_line
from keepwarm.batches.records import BatchRecord, BatchStatus, BatchStore
from keepwarm.batches.tenancy import EVERYONE
from keepwarm.batches.validation import read_lines

log = logging.getLogger(__name__)

_UNEXECUTED = {
    BatchStatus.CANCELLED: (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
    BatchStatus.EXPIRED: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    BatchStatus.FAILED: ("batch_failed", "This request was not executed because the batch failed."),
}
_APPEND_BYTES = 1 << 20  # unexecuted lines are appended in pieces of about this size


class Finalizer:
    """Closes batches out and publishes their files."""

    def __init__(self, batches: BatchStore, files: FileStore, work: Path) -> None:
        self.batches = batches
        self.files = files
        self.work = work

    def close_out(self, batch: BatchRecord, status: BatchStatus) -> None:
        """List the requests that never ran in the error file, then finish as `status`."""
        if batch.total:
            self._list_unexecuted(batch, *_UNEXECUTED[status])
        self.publish(self.batches.get(batch.id, EVERYONE), status)

    def _list_unexecuted(self, batch: BatchRecord, code: str, message: str) -> None:
        progress = batch.progress
        with (
            self.files.path(batch.input_file_id).open("rb") as handle,
            PartialFile(partial_path(self.work, batch.id, "error"), progress.error_bytes) as errors,
        ):
            handle.seek(progress.input_offset)
            pending, size, last = [], 0, None
            for last in read_lines(handle, first_number=progress.next_line + 1):
                pending.append(unexecuted_line(last.request["custom_id"], code, message))  # type: ignore[index]
                size += len(pending[-1])
                if size >= _APPEND_BYTES:
                    errors.append(b"".join(pending))
                    pending, size = [], 0
            if last is not None:
                progress = replace(
                    progress,
                    next_line=last.number,
                    input_offset=last.next_offset,
                    error_bytes=errors.append(b"".join(pending)),
                )
                self.batches.checkpoint(batch.id, progress)

    def publish(self, batch: BatchRecord, status: BatchStatus) -> None:
        """Move the committed output and error files into the file store and finish the batch."""
        progress = batch.progress
        published = {}
        for kind, committed, file_id in (
            ("output", progress.output_bytes, batch.output_file_id),
            ("error", progress.error_bytes, batch.error_file_id),
        ):
            staging = partial_path(self.work, batch.id, kind)
            if staging.exists():
                PartialFile(staging, committed).close()  # drop anything never committed
            if committed:
                self.files.place(staging, file_id)
            else:
                staging.unlink(missing_ok=True)
            published[kind] = bool(committed)
        with self.batches.database.transaction() as sql:
            for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
                if published[kind]:
                    self.files.record(sql, file_id, f"{batch.id}_{kind}.jsonl", "batch_output", batch.key_id)
            self.batches.finish(sql, batch.id, status, output=published["output"], error=published["error"])
        log.info(
            "batch %s %s: %d completed, %d failed, %d tokens in %.1fs",
            batch.id,
            status,
            progress.completed,
            progress.failed,
            progress.tokens,
            progress.seconds,
        )
