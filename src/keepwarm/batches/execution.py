"""Running an in-progress batch: its lines through the engine at background priority, chunk by chunk.

Each line is the body `/v1/embeddings` (or, for a rerank batch, `/v1/rerank`) would take,
parsed and run by the same code (so the same limits and errors apply), pinned to the
version the batch was validated with. Lines spend their key's tokens per minute at
background priority (see budget), wait out a full queue and retry transient faults; a
request's own error (a 400 from the engine, a line larger than the key's whole TPM)
goes to the error file.

At most `pipeline_depth` chunks are queued at once, so a job never fills the queue
online requests share. After each chunk, in this order: its lines are appended to the
output and error files and flushed; its usage is metered under the batch's id and line
numbers (idempotent); its progress is committed. A chunk that never reached its commit
runs again after a restart, and its lines are neither written nor metered twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from keepwarm.api.rerank import CohereRerankRequest, cohere_rerank_body
from keepwarm.api.responses import embeddings_body, error_body, usage_event
from keepwarm.api.schemas import parse_embedding_request, parse_json_body
from keepwarm.batches.budget import TokenBudget
from keepwarm.batches.expiry import past_window
from keepwarm.batches.files import FileStore
from keepwarm.batches.output import PartialFile, partial_path, response_line
from keepwarm.batches.records import BatchRecord, BatchStatus, BatchStore
from keepwarm.batches.validation import Line, count_inputs, read_lines
from keepwarm.engine import BACKGROUND, Answer, Engine, Scores
from keepwarm.engine.types import Admission
from keepwarm.errors import KeepwarmError, NotReady, Overloaded
from keepwarm.store import ApiKey, UsageEvent, UsageStore

log = logging.getLogger(__name__)

_INFERENCE_ATTEMPTS = 3
A = TypeVar("A", bound=Answer)


@dataclass(frozen=True)
class Ran:
    """Where a run stopped: the batch's status then, and whether every line has run."""

    status: BatchStatus
    complete: bool


@dataclass(frozen=True)
class _Outcome:
    number: int  # the line's number
    ok: bool
    line: bytes  # for the output file (ok) or the error file
    usage: UsageEvent | None  # what to meter (a request that ran)


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
    """Appends finished chunks to the partial files, meters them, and commits the batch's progress."""

    def __init__(
        self,
        batches: BatchStore,
        usage: UsageStore,
        batch: BatchRecord,
        output: PartialFile,
        errors: PartialFile,
    ) -> None:
        self.batches = batches
        self.usage = usage
        self.batch_id = batch.id
        self.progress = batch.progress
        self.output = output
        self.errors = errors
        self._clock = time.monotonic()

    def commit(self, last: Line, outcomes: list[_Outcome]) -> BatchStatus:
        """Durably append the chunk's lines, meter them, then commit; returns the batch's status now."""
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
            tokens=progress.tokens + sum(o.usage.tokens for o in outcomes if o.usage),
            seconds=progress.seconds + (now - self._clock),
        )
        self._clock = now
        self.usage.record_lines(self.batch_id, [(o.number, o.usage) for o in outcomes if o.usage])
        return self.batches.checkpoint(self.batch_id, self.progress)


class Execution:
    """Runs batches' lines from their last checkpoint."""

    def __init__(
        self,
        *,
        batches: BatchStore,
        files: FileStore,
        usage: UsageStore,
        engine: Engine,
        budget: TokenBudget,
        work: Path,
        chunk_inputs: int,
        pipeline_depth: int,
    ) -> None:
        self.batches = batches
        self.files = files
        self.usage = usage
        self.engine = engine
        self.budget = budget
        self.work = work
        self.chunk_inputs = chunk_inputs
        self.pipeline_depth = pipeline_depth

    async def run(self, batch: BatchRecord, key: ApiKey, still_owned: Callable[[], bool]) -> Ran:
        """Run the lines left, stopping early when the batch's status changes, its window ends or
        `still_owned()` turns false (its key was revoked)."""
        progress = batch.progress
        if progress.next_line:
            log.info(
                "resuming batch %s after line %d (%d requests done)",
                batch.id,
                progress.next_line,
                progress.completed + progress.failed,
            )
        with (
            self.files.path(batch.input_file_id).open("rb") as handle,
            PartialFile(partial_path(self.work, batch.id, "output"), progress.output_bytes) as output,
            PartialFile(partial_path(self.work, batch.id, "error"), progress.error_bytes) as errors,
        ):
            handle.seek(progress.input_offset)
            chunks = _chunks(read_lines(handle, first_number=progress.next_line + 1), self.chunk_inputs)
            checkpoints = _Checkpoints(self.batches, self.usage, batch, output, errors)
            return await self._run_chunks(batch, key, chunks, checkpoints, still_owned)

    async def _run_chunks(
        self,
        batch: BatchRecord,
        key: ApiKey,
        chunks: Iterator[list[Line]],
        checkpoints: _Checkpoints,
        still_owned: Callable[[], bool],
    ) -> Ran:
        """Keep `pipeline_depth` chunks in the engine, committing them in order."""
        pending: deque[tuple[Line, asyncio.Future[list[_Outcome]]]] = deque()
        model = pinned(batch.model, batch.model_version)  # type: ignore[arg-type] - set at validation
        waits = _BudgetWaits(batch.id, key)
        status, complete = BatchStatus.IN_PROGRESS, True
        try:
            for chunk in chunks:
                if past_window(batch) or not still_owned():
                    complete = False
                    break
                pending.append(
                    (
                        chunk[-1],
                        asyncio.ensure_future(self._run_chunk(batch.endpoint, model, key, chunk, waits)),
                    )
                )
                if len(pending) >= self.pipeline_depth:
                    last, future = pending.popleft()
                    status = checkpoints.commit(last, await future)
                    if status != BatchStatus.IN_PROGRESS:
                        return Ran(status, complete=False)
            while pending and status == BatchStatus.IN_PROGRESS:
                last, future = pending.popleft()
                status = checkpoints.commit(last, await future)
            return Ran(status, complete=complete and not pending)
        finally:
            for _, future in pending:
                future.cancel()

    async def _run_chunk(
        self, endpoint: str, model: str, key: ApiKey, chunk: list[Line], waits: _BudgetWaits
    ) -> list[_Outcome]:
        runs = (self._run_line(endpoint, model, key, line, waits) for line in chunk)
        return list(await asyncio.gather(*runs))

    async def _run_line(
        self, endpoint: str, model: str, key: ApiKey, line: Line, waits: _BudgetWaits
    ) -> _Outcome:
        assert line.request is not None  # validated
        custom_id = line.request["custom_id"]
        run = self._rerank_line if endpoint == "/v1/rerank" else self._embed_line
        try:
            result, body = await run(model, key, orjson.dumps(line.request["body"]), custom_id, waits)
        except KeepwarmError as error:
            body = error_body(error.message, error.type, error.param, error.code)
            return _Outcome(line.number, False, response_line(custom_id, error.status, body), None)
        usage = usage_event(key.id, result)
        return _Outcome(line.number, True, response_line(custom_id, 200, body), usage)

    async def _embed_line(
        self, model: str, key: ApiKey, raw: bytes, _: str, waits: _BudgetWaits
    ) -> tuple[Answer, dict[str, Any]]:
        """A `/v1/embeddings` line: the body that route takes, and the body it answers."""
        request = parse_embedding_request(raw)
        options = request.options(priority=BACKGROUND)
        result = await self._call(
            key, lambda admit: self.engine.embed(model, request.input, options, admit=admit), waits
        )
        return result, embeddings_body(
            result,
            requested_model=request.model,
            encoding_format=request.encoding_format or "float",
            output_dtype=request.output_dtype or "float",
        )

    async def _rerank_line(
        self, model: str, key: ApiKey, raw: bytes, custom_id: str, waits: _BudgetWaits
    ) -> tuple[Answer, dict[str, Any]]:
        """A `/v1/rerank` line: Cohere's rerank body, answered as `/v1/rerank` answers it."""
        request = parse_json_body(CohereRerankRequest, raw)
        options = request.options(priority=BACKGROUND)
        texts = request.texts()

        def rerank(admit: Admission | None) -> Awaitable[Scores]:
            return self.engine.rerank(model, request.query, texts, options, admit=admit)

        result = await self._call(key, rerank, waits)
        return result, cohere_rerank_body(result, request, custom_id)

    async def _call(
        self, key: ApiKey, call: Callable[[Admission | None], Awaitable[A]], waits: _BudgetWaits
    ) -> A:
        """`call` within the key's budget, waiting out a full queue and retrying transient faults."""
        attempts = 0
        while True:
            try:
                return await self.budget.embed(key, call, waits.note)
            except Overloaded as error:
                await asyncio.sleep(min(error.retry_after or 1, 5))
            except NotReady as error:
                attempts += 1
                if attempts >= _INFERENCE_ATTEMPTS:
                    raise
                await asyncio.sleep(error.retry_after or 1)


class _BudgetWaits:
    """Says once per run that a batch waits for its key's token budget (then at debug level)."""

    def __init__(self, batch_id: str, key: ApiKey) -> None:
        self.batch_id = batch_id
        self.key = key
        self._said = False

    def note(self, seconds: float) -> None:
        level = logging.DEBUG if self._said else logging.INFO
        self._said = True
        log.log(
            level,
            "batch %s waits %.1fs for the token budget of key %s (TPM %s)",
            self.batch_id,
            seconds,
            self.key.label,
            self.key.tpm,
        )
