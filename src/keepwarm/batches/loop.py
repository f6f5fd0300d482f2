"""The batch runner: a thread with its own event loop that works through every active batch.

File and database work on this thread never blocks the HTTP loop, and the thread runs
at the lowest CPU priority, so reading, encoding and writing results yield to online
work too. Only the process holding the runner's lease (see leader) runs batches; the
others stand by and take over. While the database cannot be reached the runner waits
and carries on where its last commit left off; it never fails a batch for that. Each
round takes the oldest batch with work left and does its next step: close it out (past
its window, cancelled, its key revoked), validate it, run it, or publish it. A fault in
one batch fails that batch with a generic message (the details go to the log under an
error id), never the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from keepwarm.batches.budget import TokenBudget
from keepwarm.batches.execution import Execution, pinned
from keepwarm.batches.expiry import past_window, remove_expired_files
from keepwarm.batches.files import FileStore
from keepwarm.batches.finalize import Finalizer
from keepwarm.batches.leader import Lease, LeaseLost
from keepwarm.batches.records import BatchRecord, BatchStatus, BatchStore, error_entry
from keepwarm.batches.tenancy import EVERYONE, owner_key
from keepwarm.batches.validation import Limits, served_identity, validate_batch
from keepwarm.engine import Engine
from keepwarm.engine.background import lower_thread_priority
from keepwarm.errors import KeepwarmError
from keepwarm.store import ApiKey, DatabaseUnavailable, KeyStore, UsageStore

log = logging.getLogger(__name__)

_STANDBY_SECONDS = 1.0  # how often a standing-by runner retries the lock and looks for new batches


@dataclass(frozen=True)
class RunnerSettings:
    """How the runner feeds the engine."""

    chunk_inputs: int = 64  # inputs per checkpoint
    pipeline_depth: int = 2  # chunks queued in the engine at once
    limits: Limits = Limits()


class BatchRunner:
    """Runs every active batch in the data directory, oldest first."""

    def __init__(
        self,
        root: Path,
        *,
        batches: BatchStore,
        files: FileStore,
        keys: KeyStore,
        usage: UsageStore,
        engine: Engine,
        budget: TokenBudget,
        settings: RunnerSettings,
    ) -> None:
        self.root = root
        self.batches = batches
        self.files = files
        self.keys = keys
        self.engine = engine
        self.settings = settings
        self.lease = Lease(batches.database)
        batches.fence = self.lease.fence
        work = root / "work"
        self.finalizer = Finalizer(batches, files, work)
        self.execution = Execution(
            batches=batches,
            files=files,
            usage=usage,
            engine=engine,
            budget=budget,
            work=work,
            chunk_inputs=settings.chunk_inputs,
            pipeline_depth=settings.pipeline_depth,
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="keepwarm-batches", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.lease.start()
        self._thread.start()

    def wake(self) -> None:
        """Look for work now (a batch was created or cancelled)."""
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        """Stop between chunks' commits; unfinished chunks run again at the next start."""
        self._stopping.set()
        self._wake.set()
        if self._loop and self._task:
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _thread_main(self) -> None:
        lower_thread_priority()
        try:
            asyncio.run(self._main())
        except Exception:  # noqa: BLE001 - a runner bug must be logged, not kill the server silently
            log.exception("the batch runner stopped on an unexpected error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            while not self._stopping.is_set():
                await self._lead()
                try:
                    await self._run_batches()
                except LeaseLost as lost:
                    log.warning("stopped running batches: %s; standing by", lost)
        except asyncio.CancelledError:
            log.info("batch runner stopped")
        finally:
            await asyncio.to_thread(self.lease.release)

    async def _lead(self) -> None:
        """Return once this process holds the lease (or is stopping)."""
        announced = False
        while not self._stopping.is_set():
            try:
                if await asyncio.to_thread(self.lease.try_acquire):
                    log.info("batch runner started")
                    return
            except DatabaseUnavailable:
                log.warning("the database is unavailable; the batch runner waits for it")
            if not announced:
                log.info("another keepwarm process runs the batches; standing by")
                announced = True
            await self._idle()

    async def _run_batches(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = self.batches.next_active()
                if batch is None:
                    await self._idle()
                else:
                    await self._work_on_safely(batch)
            except DatabaseUnavailable:
                log.warning("the database is unavailable; batches resume from their last checkpoint")
                await self._idle()

    async def _idle(self) -> None:
        if not self._stopping.is_set():
            with contextlib.suppress(DatabaseUnavailable):
                remove_expired_files(self.files)
        await asyncio.to_thread(self._wake.wait, _STANDBY_SECONDS)
        self._wake.clear()

    async def _work_on_safely(self, batch: BatchRecord) -> None:
        """Work on one batch; a fault in it fails that batch instead of stopping the runner."""
        try:
            await self._work_on(batch)
        except (DatabaseUnavailable, LeaseLost):
            raise  # not the batch's fault: it resumes from its last commit
        except Exception:  # noqa: BLE001 - e.g. an unreadable input file or a full disk
            error_id = uuid.uuid4().hex
            log.exception("batch %s failed on an internal error (error id %s)", batch.id, error_id)
            message = f"The batch stopped on an internal error (error id {error_id} in the server log)."
            self.batches.fail(batch.id, [error_entry("server_error", message)], total=batch.total)

    async def _work_on(self, batch: BatchRecord) -> None:
        key = owner_key(self.keys, batch.key_id)
        if past_window(batch):
            self.finalizer.close_out(batch, BatchStatus.EXPIRED)
        elif key is None and batch.status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
            self._stop_for(batch, "key_revoked", "The API key that created this batch was revoked.")
        elif batch.status == BatchStatus.VALIDATING:
            assert key is not None
            validate_batch(
                batch,
                key,
                path=self.files.path(batch.input_file_id),
                batches=self.batches,
                engine=self.engine,
                limits=self.settings.limits,
            )
        elif batch.status == BatchStatus.IN_PROGRESS:
            assert key is not None
            await self._execute(batch, key)
        elif batch.status == BatchStatus.CANCELLING:
            self.finalizer.close_out(batch, BatchStatus.CANCELLED)
        elif batch.status == BatchStatus.FINALIZING:
            self.finalizer.publish(batch, BatchStatus.COMPLETED)

    async def _execute(self, batch: BatchRecord, key: ApiKey) -> None:
        problem = self._model_problem(batch)
        if problem:
            self._stop_for(batch, "model_changed", problem)
            return
        ran = await self.execution.run(batch, key, lambda: owner_key(self.keys, batch.key_id) is not None)
        if ran.complete and self.batches.move(
            batch.id, BatchStatus.FINALIZING, when=(BatchStatus.IN_PROGRESS,)
        ):
            self.finalizer.publish(self.batches.get(batch.id, EVERYONE), BatchStatus.COMPLETED)
        # otherwise it stopped early (cancelled, past its window, key revoked): the next round closes it out

    def _stop_for(self, batch: BatchRecord, code: str, message: str) -> None:
        """Fail a batch that cannot go on, keeping what it finished and listing what never ran."""
        self.batches.record_errors(batch.id, [error_entry(code, message)])
        self.finalizer.close_out(self.batches.get(batch.id, EVERYONE), BatchStatus.FAILED)

    def _model_problem(self, batch: BatchRecord) -> str | None:
        """Why the batch cannot go on (its vectors must all come from the version it started with)."""
        try:
            served_identity(self.engine, pinned(batch.model, batch.model_version))  # type: ignore[arg-type]
        except KeepwarmError:
            return (
                f"The model '{batch.model}' is no longer served at version {batch.model_version[:12]}, "  # type: ignore[index]
                "which this batch started with; its finished requests are in the output file."
            )
        return None
