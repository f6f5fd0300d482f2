"""The batch runner: works through batches one chunk at a time, at background priority.

It runs on its own thread with its own event loop, so file and database work never
blocks the HTTP loop, and feeds the engine with `priority=BACKGROUND`: the scheduler
always serves online requests first, and the job gets the capacity they leave. At
most `pipeline_depth` chunks are queued at once, so the job never fills the queue
that online requests share.

After each chunk its lines are appended and flushed, then the new progress is
committed; a chunk that never reached its commit runs again after a restart. Only
one process per data directory runs batches (an advisory file lock, released by the
kernel when its holder dies), so servers sharing a data directory never run a batch
twice; the others stand by and take over.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import orjson

from keepwarm.api.responses import embeddings_body, error_body
from keepwarm.api.schemas import parse_embedding_request
from keepwarm.batches.files import FileStore
from keepwarm.batches.jobs import (
    CANCELLED, CANCELLING, COMPLETED, EXPIRED, FAILED, FINALIZING, IN_PROGRESS, VALIDATING, BatchRecord, JobStore,
)
from keepwarm.batches.output import PartialFile, response_line, unexecuted_line
from keepwarm.batches.validation import Limits, Line, count_inputs, read_lines, validate_file
from keepwarm.engine import BACKGROUND, EmbedOptions, Embeddings, Engine
from keepwarm.engine.background import lower_thread_priority
from keepwarm.errors import KeepwarmError, NotReady, Overloaded

log = logging.getLogger(__name__)

_STANDBY_SECONDS = 1.0  # how often a standing-by runner retries the lock and looks for new batches
_INFERENCE_ATTEMPTS = 3
_UNEXECUTED = {
    CANCELLED: ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    EXPIRED: ("batch_expired", "This request could not be executed before the completion window expired."),
    FAILED: ("batch_failed", "This request was not executed because the batch failed."),
}


@dataclass(frozen=True)
class RunnerSettings:
    """How the runner feeds the engine."""

    chunk_inputs: int = 64  # inputs per checkpoint
    pipeline_depth: int = 2  # chunks queued in the engine at once
    limits: Limits = Limits()


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    line: bytes
    tokens: int


def pinned(model: str, version: str) -> str:
    """`model` held to `version`, so a catalog reload mid-batch cannot mix versions in one output."""
    return model if "@" in model else f"{model}@{version}"


def _chunks(lines: Iterator[Line], inputs_per_chunk: int) -> Iterator[list[Line]]:
    """Consecutive lines holding about `inputs_per_chunk` inputs (validated lines only)."""
    chunk: list[Line] = []
    inputs = 0
    for line in lines:
        chunk.append(line)
        inputs += count_inputs(line.request["body"])  # type: ignore[index]
        if inputs >= inputs_per_chunk:
            yield chunk
            chunk, inputs = [], 0
    if chunk:
        yield chunk


class _Checkpoints:
    """Appends finished chunks to the partial files and commits the batch's progress."""

    def __init__(self, jobs: JobStore, batch: BatchRecord, output: PartialFile, errors: PartialFile) -> None:
        self.jobs = jobs
        self.batch_id = batch.id
        self.progress = batch.progress
        self.output = output
        self.errors = errors
        self._clock = time.monotonic()

    def commit(self, last: Line, outcomes: list[_Outcome]) -> str:
        """Durably append the chunk's lines, then commit; returns the batch's status now."""
        now = time.monotonic()
        progress = self.progress
        self.progress = replace(
            progress,
            next_line=last.number,
            input_offset=last.next_offset,
            output_bytes=self.output.append(b"".join(o.line for o in outcomes if o.ok)),
            error_bytes=self.errors.append(b"".join(o.line for o in outcomes if not o.ok)),
            completed=progress.completed + sum(o.ok for o in outcomes),
            failed=progress.failed + sum(not o.ok for o in outcomes),
            tokens=progress.tokens + sum(o.tokens for o in outcomes),
            seconds=progress.seconds + (now - self._clock),
        )
        self._clock = now
        return self.jobs.checkpoint(self.batch_id, self.progress)


class BatchRunner:
    """Runs every active batch in the data directory, oldest first."""

    def __init__(self, root: Path, jobs: JobStore, files: FileStore, engine: Engine, settings: RunnerSettings) -> None:
        self.root = root
        self.work = root / "work"
        self.jobs = jobs
        self.files = files
        self.engine = engine
        self.settings = settings
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="keepwarm-batches", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
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
        lower_thread_priority()  # reading, encoding and writing results yields to online work too
        try:
            asyncio.run(self._main())
        except Exception:  # noqa: BLE001 - a runner bug must be logged, not kill the server silently
            log.exception("the batch runner stopped on an unexpected error")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        if self._stopping.is_set():
            return
        try:
            with self._runner_lock() as lock:
                await self._hold_lock(lock)
                while not self._stopping.is_set():
                    batch = self.jobs.next_active()
                    if batch is None:
                        await self._idle()
                    else:
                        await self._work_on_safely(batch)
        except asyncio.CancelledError:
            log.info("batch runner stopped")

    def _runner_lock(self) -> IO[bytes]:
        self.root.mkdir(parents=True, exist_ok=True)
        return (self.root / "runner.lock").open("ab")

    async def _hold_lock(self, lock: IO[bytes]) -> None:
        announced = False
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                log.info("batch runner started")
                return
            except BlockingIOError:
                if not announced:
                    log.info("another keepwarm process runs batches for this data directory; standing by")
                    announced = True
                await self._idle()

    async def _idle(self) -> None:
        self._remove_expired_files()
        await asyncio.to_thread(self._wake.wait, _STANDBY_SECONDS)
        self._wake.clear()

    def _remove_expired_files(self) -> None:
        for file_id in self.files.expired():
            if not self.jobs.uses_file(file_id):  # a running batch still reads its input to the end
                self.files.delete(file_id)

    async def _work_on_safely(self, batch: BatchRecord) -> None:
        """Work on one batch; a fault in it fails that batch instead of stopping the runner."""
        try:
            await self._work_on(batch)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable input file or a full disk
            log.exception("batch %s failed on an internal error", batch.id)
            message = f"The batch stopped on an internal error: {type(exc).__name__}: {exc}"
            self.jobs.fail(batch.id, [{"code": "server_error", "message": message, "param": None, "line": None}],
                           total=batch.total)

    async def _work_on(self, batch: BatchRecord) -> None:
        if batch.status in (VALIDATING, IN_PROGRESS) and time.time() >= batch.expires_at:
            self._close_out(batch, EXPIRED)
        elif batch.status == VALIDATING:
            self._validate(batch)
        elif batch.status == IN_PROGRESS:
            await self._execute(batch)
        elif batch.status == CANCELLING:
            self._close_out(batch, CANCELLED)
        elif batch.status == FINALIZING:
            self._publish(batch, COMPLETED)

    def _identity(self, model: str) -> tuple[str, str]:
        """The model and exact version a name, alias or pin stands for now (ModelNotFound if none)."""
        view = self.engine.describe(model)[0]
        return view.spec.name, view.version

    def _validate(self, batch: BatchRecord) -> None:
        path = self.files.path(batch.input_file_id)
        result = validate_file(path, batch.endpoint, self._identity, self.settings.limits)
        if result.errors:
            log.info("batch %s failed validation with %d error(s)", batch.id, len(result.errors))
            self.jobs.fail(batch.id, result.errors, total=result.total)
            return
        assert result.model is not None
        _, version = result.served  # what `_identity` gave during validation: no second lookup to race a reload
        self.jobs.start(batch.id, total=result.total, model=result.model, model_version=version)
        log.info("batch %s: %d requests for %s", batch.id, result.total, result.model)

    def _model_problem(self, batch: BatchRecord) -> str | None:
        """Why the batch cannot go on (its vectors must all come from the version it started with)."""
        try:
            self._identity(pinned(batch.model, batch.model_version))
        except KeepwarmError:
            return (
                f"The model '{batch.model}' is no longer served at version {batch.model_version[:12]}, "
                "which this batch started with; its finished requests are in the output file."
            )
        return None

    async def _execute(self, batch: BatchRecord) -> None:
        problem = self._model_problem(batch)
        if problem:
            self.jobs.record_errors(batch.id, [{"code": "model_changed", "message": problem, "param": None, "line": None}])
            self._close_out(self.jobs.get(batch.id), FAILED)
            return
        progress = batch.progress
        if progress.next_line:
            log.info("resuming batch %s after line %d (%d requests done)", batch.id, progress.next_line,
                     progress.completed + progress.failed)
        with (
            self.files.path(batch.input_file_id).open("rb") as handle,
            PartialFile(self._partial(batch, "output"), progress.output_bytes) as output,
            PartialFile(self._partial(batch, "error"), progress.error_bytes) as errors,
        ):
            handle.seek(progress.input_offset)
            chunks = _chunks(read_lines(handle, progress.next_line + 1), self.settings.chunk_inputs)
            status = await self._run_chunks(batch, chunks, _Checkpoints(self.jobs, batch, output, errors))
        if status == IN_PROGRESS and time.time() >= batch.expires_at:
            self._close_out(self.jobs.get(batch.id), EXPIRED)
        elif status == IN_PROGRESS and self.jobs.move(batch.id, FINALIZING, when=(IN_PROGRESS,)):
            self._publish(self.jobs.get(batch.id), COMPLETED)

    async def _run_chunks(self, batch: BatchRecord, chunks: Iterator[list[Line]], checkpoints: _Checkpoints) -> str:
        """Keep `pipeline_depth` chunks in the engine, committing them in order; stop on cancel or expiry."""
        pending: deque[tuple[Line, asyncio.Future[list[_Outcome]]]] = deque()
        model = pinned(batch.model, batch.model_version)  # every line, not just the start, on that version
        status = IN_PROGRESS
        try:
            for chunk in chunks:
                if time.time() >= batch.expires_at:
                    break
                pending.append((chunk[-1], asyncio.ensure_future(self._run_chunk(model, chunk))))
                if len(pending) >= self.settings.pipeline_depth:
                    last, future = pending.popleft()
                    status = checkpoints.commit(last, await future)
                    if status != IN_PROGRESS:
                        return status
            while pending and status == IN_PROGRESS:
                last, future = pending.popleft()
                status = checkpoints.commit(last, await future)
            return status
        finally:
            for _, future in pending:
                future.cancel()

    async def _run_chunk(self, model: str, chunk: list[Line]) -> list[_Outcome]:
        return list(await asyncio.gather(*(self._run_line(model, line) for line in chunk)))

    async def _run_line(self, model: str, line: Line) -> _Outcome:
        assert line.request is not None  # validated
        custom_id = line.request["custom_id"]
        try:
            request = parse_embedding_request(orjson.dumps(line.request["body"]))
            result = await self._embed(model, request.input, request.options(priority=BACKGROUND))
        except KeepwarmError as error:
            body = error_body(error.message, error.type, error.param, error.code)
            return _Outcome(False, response_line(custom_id, error.status, body), 0)
        body = embeddings_body(result, requested_model=request.model, encoding_format=request.encoding_format or "float")
        return _Outcome(True, response_line(custom_id, 200, body), result.tokens)

    async def _embed(self, model: str, inputs: list, options: EmbedOptions) -> Embeddings:
        """Embed at background priority, waiting out a full queue and retrying transient faults."""
        attempts = 0
        while True:
            try:
                return await self.engine.embed(model, inputs, options)
            except Overloaded as error:
                await asyncio.sleep(min(error.retry_after or 1, 5))
            except NotReady as error:
                attempts += 1
                if attempts >= _INFERENCE_ATTEMPTS:
                    raise
                await asyncio.sleep(error.retry_after or 1)

    def _partial(self, batch: BatchRecord, kind: str) -> Path:
        return self.work / f"{batch.id}.{kind}.jsonl"

    def _close_out(self, batch: BatchRecord, status: str) -> None:
        """List the requests that never ran in the error file, then finish as `status`."""
        code, message = _UNEXECUTED[status]
        progress = batch.progress
        if batch.total:
            with (
                self.files.path(batch.input_file_id).open("rb") as handle,
                PartialFile(self._partial(batch, "error"), progress.error_bytes) as errors,
            ):
                handle.seek(progress.input_offset)
                lines = list(read_lines(handle, progress.next_line + 1))
                if lines:
                    data = b"".join(unexecuted_line(line.request["custom_id"], code, message) for line in lines)
                    progress = replace(
                        progress, next_line=lines[-1].number, input_offset=lines[-1].next_offset,
                        error_bytes=errors.append(data),
                    )
                    self.jobs.checkpoint(batch.id, progress)
        self._publish(self.jobs.get(batch.id), status)

    def _publish(self, batch: BatchRecord, status: str) -> None:
        """Move the committed output and error files into the file store and finish the batch."""
        progress = batch.progress
        published = {}
        for kind, committed, file_id in (
            ("output", progress.output_bytes, batch.output_file_id),
            ("error", progress.error_bytes, batch.error_file_id),
        ):
            staging = self._partial(batch, kind)
            if staging.exists():
                PartialFile(staging, committed).close()  # drop anything never committed
            if committed:
                self.files.place(staging, file_id)
            else:
                staging.unlink(missing_ok=True)
            published[kind] = bool(committed)
        with self.jobs.database.transaction() as sql:
            for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
                if published[kind]:
                    self.files.record(sql, file_id, f"{batch.id}_{kind}.jsonl", "batch_output")
            self.jobs.finish(sql, batch.id, status, output=published["output"], error=published["error"])
        log.info(
            "batch %s %s: %d completed, %d failed, %d tokens in %.1fs",
            batch.id, status, progress.completed, progress.failed, progress.tokens, progress.seconds,
        )
