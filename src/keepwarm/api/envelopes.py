"""How each HTTP dialect writes an error: the body its clients parse, and the status they expect.

Every failure is a `KeepwarmError` (errors.py), which carries its meaning as data; an
`Envelope` only decides how that meaning is written for one dialect's clients:

- OpenAI: `{"error": {"message", "type", "param", "code"}}` with keepwarm's own statuses.
- Cohere: `{"id", "message"}` with keepwarm's statuses, which are the ones the `cohere` SDK
  maps to its exceptions (400 BadRequestError, 401 UnauthorizedError, 403 ForbiddenError,
  404 NotFoundError, 429 TooManyRequestsError, 503 ServiceUnavailableError).
- text-embeddings-inference: `{"error", "error_type"}`, with TEI's status for each type:
  inputs over a length or size limit are `Validation` (413), other bad input `Validation`
  (422, as TEI answers a body it cannot read), a full queue or a spent rate limit
  `Overloaded` (429), a server not ready `Unhealthy` (503), a fault `Backend`.

A dialect's routes declare theirs with `dependencies=[speaks(COHERE)]` on their router;
requests that reach no such route (unknown URLs, the connection-level refusals) are
answered in OpenAI's envelope, the server's first dialect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from starlette.types import Scope

from keepwarm.api.responses import JSONResponse, error_body
from keepwarm.errors import InputTooLong, KeepwarmError, PayloadTooLarge

_SCOPE_KEY = "keepwarm.envelope"

# (error, request id) -> (status, body)
Render = Callable[[KeepwarmError, str], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Envelope:
    """One dialect's way of writing errors (see the module docs)."""

    name: str
    render: Render

    def response(self, error: KeepwarmError, request_id: str) -> JSONResponse:
        """`error` as this dialect's answer, with the error's own headers and, when known, Retry-After."""
        status, body = self.render(error, request_id)
        headers = dict(error.headers)
        if error.retry_after:
            headers["Retry-After"] = str(math.ceil(error.retry_after))
        return JSONResponse(body, status_code=status, headers=headers)


def _openai(error: KeepwarmError, _: str) -> tuple[int, dict[str, Any]]:
    return error.status, error_body(error.message, error.type, error.param, error.code)


def _cohere(error: KeepwarmError, request_id: str) -> tuple[int, dict[str, Any]]:
    return error.status, {"id": request_id, "message": error.message}


_TEI_LENGTH_CODES = frozenset({"context_length_exceeded", "max_tokens_per_request", "too_many_inputs"})
_TEI_TYPES = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 408: "Timeout", 409: "Conflict"}


def tei_error(error: KeepwarmError) -> tuple[int, str]:
    """TEI's (status, error_type) for a keepwarm error."""
    status = error.status
    if isinstance(error, InputTooLong | PayloadTooLarge) or error.code in _TEI_LENGTH_CODES:
        return 413, "Validation"
    if status in (400, 431):
        return 422, "Validation"
    if status == 429:
        return 429, "Overloaded"
    if status == 503:
        return 503, "Unhealthy"
    if status >= 500:
        return status, "Backend"
    return status, _TEI_TYPES.get(status, "Validation")


def _tei(error: KeepwarmError, _: str) -> tuple[int, dict[str, Any]]:
    status, error_type = tei_error(error)
    return status, {"error": error.message, "error_type": error_type}


OPENAI = Envelope("openai", _openai)
COHERE = Envelope("cohere", _cohere)
TEI = Envelope("tei", _tei)


def envelope_of(scope: Scope) -> Envelope:
    """The envelope of the route handling this request (OpenAI's until a route says otherwise)."""
    return scope.get(_SCOPE_KEY, OPENAI)


def speaks(envelope: Envelope) -> Any:
    """A router dependency: errors of this router's requests leave in `envelope`.

    Router dependencies run before the route's own (authentication included), so even a
    refused key is answered in the dialect.
    """

    def choose(request: Request) -> None:
        request.scope[_SCOPE_KEY] = envelope

    return Depends(choose)
