"""Checking a batch input file before any of it runs, with errors that name the line.

A line is one request: `{"custom_id", "method": "POST", "url": <the batch endpoint>,
"body": {...}}`. Problems with the file's structure (not JSON, duplicate or missing
`custom_id`, wrong method or url, too many requests, unknown or mixed models) fail
the whole batch, as OpenAI does; problems inside a body (a bad `input`, say) are the
request's own and come back in the error file with a 400, like the same body sent
to `/v1/embeddings`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from keepwarm.errors import KeepwarmError

MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True)
class Limits:
    """OpenAI's limits for an embeddings batch."""

    max_requests: int = 50_000
    max_inputs: int = 50_000


@dataclass(frozen=True)
class Line:
    """One request line: its 1-based number, where the next line starts, and its content."""

    number: int
    next_offset: int
    request: dict[str, Any] | None  # None when the line is not a JSON object


@dataclass
class Validated:
    """What validation found: the request count, the one model used, and any errors."""

    total: int = 0
    inputs: int = 0
    model: str | None = None
    served: object = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)

    def error(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.errors.append({"code": code, "message": message, "param": param, "line": line})


def read_lines(handle: IO[bytes], first_number: int = 1) -> Iterator[Line]:
    """Non-blank lines from the handle's position, with their numbers and end offsets."""
    offset = handle.tell()
    for number, raw in enumerate(handle, start=first_number):
        offset += len(raw)
        if raw.strip():
            yield Line(number, offset, _parse(raw))


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def count_inputs(body: dict[str, Any]) -> int:
    """How many embedding inputs a request body holds (a token-id array is one)."""
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


def _check_line(line: Line, endpoint: str, result: Validated, resolve: Callable[[str], object]) -> None:
    request = line.request
    if request is None:
        result.error(line.number, "invalid_json_line", "This line is not parseable as a JSON object.")
        return
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        result.error(line.number, "missing_required_parameter", "custom_id must be a non-empty string.", "custom_id")
    elif custom_id in result._seen:
        result.error(
            line.number, "duplicate_custom_id",
            f"The custom_id '{custom_id}' is a duplicate of the one on line {result._seen[custom_id]}. "
            "The custom_id must be unique for each request in a batch.", "custom_id",
        )
    else:
        result._seen[custom_id] = line.number
    if request.get("method") != "POST":
        result.error(line.number, "invalid_method", f"method must be 'POST', got {request.get('method')!r}.", "method")
    if request.get("url") != endpoint:
        result.error(
            line.number, "invalid_url",
            f"url must be the batch endpoint '{endpoint}', got {request.get('url')!r}.", "url",
        )
    body = request.get("body")
    if not isinstance(body, dict):
        result.error(line.number, "invalid_request", "body must be a JSON object.", "body")
        return
    result.inputs += count_inputs(body)
    _check_model(line.number, body.get("model"), result, resolve)


def _check_model(number: int, model: Any, result: Validated, resolve: Callable[[str], object]) -> None:
    if not isinstance(model, str) or not model:
        result.error(number, "missing_required_parameter", "body.model must be a non-empty string.", "body.model")
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
            number, "mismatched_model",
            f"body.model '{model}' differs from '{result.model}' used by earlier lines; "
            "every request in a batch must use the same model.", "body.model",
        )


def validate_file(path: Path, endpoint: str, resolve: Callable[[str], object], limits: Limits) -> Validated:
    """Check every line; `resolve` gives a model's identity, raising for a model that is not served."""
    result = Validated()
    with path.open("rb") as handle:
        for line in read_lines(handle):
            result.total += 1
            _check_line(line, endpoint, result, resolve)
    if result.total == 0:
        result.error(None, "empty_file", "The batch input file is empty.")
    if result.total > limits.max_requests:
        result.error(
            None, "too_many_requests",
            f"The batch input file has {result.total} requests; the maximum is {limits.max_requests}.",
        )
    if result.inputs > limits.max_inputs:
        result.error(
            None, "too_many_inputs",
            f"The batch has {result.inputs} embedding inputs; the maximum is {limits.max_inputs}.",
        )
    if len(result.errors) > MAX_REPORTED_ERRORS:
        hidden = len(result.errors) - MAX_REPORTED_ERRORS
        result.errors = result.errors[:MAX_REPORTED_ERRORS]
        result.error(None, "too_many_errors", f"{hidden} more errors are not listed.")
    return result
