"""Checking a batch input file before any of it runs, with errors that name the line.

A line is one request: `{"custom_id", "method": "POST", "url": <the batch endpoint>,
"body": {...}}`. Problems with the file's structure (not JSON, duplicate or missing
`custom_id`, wrong method or url, too many requests, unknown or mixed models, a model
the batch's API key may not use, a line longer than an online request body may be) fail
the whole batch, as OpenAI does; problems inside a body (a bad `input`, say) are the
request's own and come back in the error file with a 400, like the same body sent
to `/v1/embeddings` (or `/v1/rerank`, for a rerank batch).

Lines are read with a bounded reader: a line is only held in memory once it is known
to fit the body limit, so a huge line costs a scan of its bytes, never their memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from keepwarm.api.auth import as_seen_by, check_model_allowed
from keepwarm.batches.records import BatchRecord, BatchStore, error_entry
from keepwarm.engine import Engine
from keepwarm.errors import KeepwarmError, ModelNotFound
from keepwarm.store import ApiKey

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 100
_SCAN_BYTES = 64 * 1024  # how much of a line is read at a time while finding its end


@dataclass(frozen=True)
class Limits:
    """OpenAI's limits for an embeddings batch, and the online body limit for each line."""

    max_requests: int = 50_000
    max_inputs: int = 50_000
    max_line_bytes: int = 16 * 1024 * 1024  # what `keepwarm serve --max-body-mb` sets


@dataclass(frozen=True)
class Line:
    """One request line: its 1-based number, where the next line starts, its size and content."""

    number: int
    next_offset: int
    size: int
    request: dict[str, Any] | None  # None when the line is not a JSON object, or over the size limit


@dataclass
class Validated:
    """What validation found: the request count, the one model used, and any errors."""

    total: int = 0
    inputs: int = 0
    model: str | None = None
    served: Any = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)

    def error(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.errors.append(error_entry(code, message, line, param))


def read_lines(handle: IO[bytes], max_bytes: int | None = None, first_number: int = 1) -> Iterator[Line]:
    """Non-blank lines from the handle's position, with their numbers and end offsets.

    A line over `max_bytes` comes with its size and no content; it is never read whole.
    A file that passed validation is read without a limit (every line fit the one then).
    """
    number = first_number
    while raw := handle.readline(_SCAN_BYTES):
        start = handle.tell() - len(raw)
        size = len(raw) if raw.endswith(b"\n") else len(raw) + _rest_of_line(handle)
        if max_bytes is not None and size > max_bytes:
            yield Line(number, start + size, size, None)
        else:
            if size > len(raw):
                handle.seek(start)
                raw = handle.read(size)
            if raw.strip():
                yield Line(number, start + size, size, _parse(raw))
        number += 1


def _rest_of_line(handle: IO[bytes]) -> int:
    """Skip to just past the next newline (or the end); how many bytes that was."""
    skipped = 0
    while piece := handle.readline(_SCAN_BYTES):
        skipped += len(piece)
        if piece.endswith(b"\n"):
            break
    return skipped


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def count_inputs(body: dict[str, Any]) -> int:
    """How many inputs a body holds: embedding inputs (a token-id array is one), or rerank documents."""
    if isinstance(body.get("documents"), list):
        return len(body["documents"])
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


def _check_line(
    line: Line, endpoint: str, result: Validated, resolve: Callable[[str], object], max_bytes: int
) -> None:
    request = line.request
    if line.size > max_bytes:
        result.error(
            line.number,
            "request_too_large",
            f"This line is {line.size} bytes; a request may be at most {max_bytes} bytes, "
            "as a /v1/embeddings request body.",
        )
        return
    if request is None:
        result.error(line.number, "invalid_json_line", "This line is not parseable as a JSON object.")
        return
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        result.error(
            line.number, "missing_required_parameter", "custom_id must be a non-empty string.", "custom_id"
        )
    elif custom_id in result._seen:
        result.error(
            line.number,
            "duplicate_custom_id",
            f"The custom_id '{custom_id}' is a duplicate of the one on line {result._seen[custom_id]}. "
            "The custom_id must be unique for each request in a batch.",
            "custom_id",
        )
    else:
        result._seen[custom_id] = line.number
    if request.get("method") != "POST":
        result.error(
            line.number, "invalid_method", f"method must be 'POST', got {request.get('method')!r}.", "method"
        )
    if request.get("url") != endpoint:
        result.error(
            line.number,
            "invalid_url",
            f"url must be the batch endpoint '{endpoint}', got {request.get('url')!r}.",
            "url",
        )
    body = request.get("body")
    if not isinstance(body, dict):
        result.error(line.number, "invalid_request", "body must be a JSON object.", "body")
        return
    result.inputs += count_inputs(body)
    _check_model(line.number, body.get("model"), result, resolve)


def _check_model(number: int, model: Any, result: Validated, resolve: Callable[[str], object]) -> None:
    if not isinstance(model, str) or not model:
        result.error(
            number, "missing_required_parameter", "body.model must be a non-empty string.", "body.model"
        )
        return
    if model == result.model:
        return
    try:
        served = resolve(model)
    except KeepwarmError as error:
        result.error(number, error.code or "invalid_request", error.message, "body.model")
        return
    if result.model is None:
        result.model, result.served = model, served
    elif served != result.served:  # an alias of the same model version is the same model
        result.error(
            number,
            "mismatched_model",
            f"body.model '{model}' differs from '{result.model}' used by earlier lines; "
            "every request in a batch must use the same model.",
            "body.model",
        )


def validate_file(path: Path, endpoint: str, resolve: Callable[[str], object], limits: Limits) -> Validated:
    """Check every line; `resolve` gives a model's identity, raising for a model that cannot be used."""
    result = Validated()
    with path.open("rb") as handle:
        for line in read_lines(handle, limits.max_line_bytes):
            result.total += 1
            _check_line(line, endpoint, result, resolve, limits.max_line_bytes)
    if result.total == 0:
        result.error(None, "empty_file", "The batch input file is empty.")
    if result.total > limits.max_requests:
        result.error(
            None,
            "too_many_requests",
            f"The batch input file has {result.total} requests; the maximum is {limits.max_requests}.",
        )
    if result.inputs > limits.max_inputs:
        result.error(
            None,
            "too_many_inputs",
            f"The batch has {result.inputs} embedding inputs; the maximum is {limits.max_inputs}.",
        )
    if len(result.errors) > MAX_REPORTED_ERRORS:
        hidden = len(result.errors) - MAX_REPORTED_ERRORS
        result.errors = result.errors[:MAX_REPORTED_ERRORS]
        result.error(None, "too_many_errors", f"{hidden} more errors are not listed.")
    return result


def served_identity(engine: Engine, model: str) -> tuple[str, str]:
    """The model and exact version a name, alias or pin stands for now (ModelNotFound if none)."""
    view = engine.describe(model)[0]
    return view.spec.name, view.version


def validate_batch(
    batch: BatchRecord, key: ApiKey, *, path: Path, batches: BatchStore, engine: Engine, limits: Limits
) -> None:
    """validating → in_progress, or → failed with every problem found; models are checked against `key`."""

    def resolve(model: str) -> tuple[str, str]:
        try:
            view = engine.describe(model)[0]
        except ModelNotFound as error:
            raise as_seen_by(error, engine, key) from None
        check_model_allowed(key, model, view.spec.names)
        return view.spec.name, view.version

    result = validate_file(path, batch.endpoint, resolve, limits)
    if result.errors:
        log.info("batch %s failed validation with %d error(s)", batch.id, len(result.errors))
        batches.fail(batch.id, result.errors, total=result.total)
        return
    assert result.model is not None
    _, version = result.served  # what `resolve` gave during validation: no second lookup to race a reload
    batches.start(batch.id, total=result.total, model=result.model, model_version=version)
    log.info("batch %s: %d requests for %s", batch.id, result.total, result.model)
