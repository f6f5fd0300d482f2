"""Around every HTTP request: an id, the drain gate, timing headers, metrics and one JSON log line.

A pure ASGI middleware (Starlette's BaseHTTPMiddleware would break the route's
client-disconnect detection). Routes tell it what they learned, such as the caller's key,
the model and the engine's timings, through the request's `RequestRecord`.

It is also the last line of defence: an exception no route turned into an error answer
(a bug) is logged with its traceback under the request id, and the caller gets a 500
envelope that names only that id, never the exception, its message or a path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keepwarm.api.envelopes import envelope_of
from keepwarm.api.lifecycle import Lifecycle
from keepwarm.engine import Answer
from keepwarm.errors import KeepwarmError, NotReady
from keepwarm.metrics import Metrics
from keepwarm.store import ApiKey
from keepwarm.store.direct import DirectTransaction

access_log = logging.getLogger("keepwarm.access")
log = logging.getLogger(__name__)

_SCOPE_KEY = "keepwarm.request"
# answered while draining: probes and scrapes must keep working until the process exits
_ALWAYS_SERVED = frozenset({"/health", "/ready", "/metrics"})
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass
class RequestRecord:
    """What is known about one request; filled in as it is handled. Never holds input text or secrets."""

    id: str
    started: float = field(default_factory=time.perf_counter)
    key: ApiKey | None = None
    # set while `key` is the one last seen for its secret, not yet read for this request (api/auth.py);
    # it holds the request's secret until then, as the request's own headers do
    key_check: Callable[[DirectTransaction], None] | None = None
    model: str = ""  # the served model's canonical name, once resolved
    error: str | None = None  # the error code (or type) of an error answer
    result: Answer | None = None  # the engine's answer: embeddings, scores or classifications


def record_of(request: Request) -> RequestRecord:
    return request.scope[_SCOPE_KEY]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _timing_headers(result: Answer, total: float) -> list[tuple[bytes, bytes]]:
    timings = result.timings
    return [
        (b"x-total-time", _ms(total).encode()),
        (b"x-tokenization-time", _ms(timings.tokenization).encode()),
        (b"x-queue-time", _ms(timings.queue).encode()),
        (b"x-inference-time", _ms(timings.inference).encode()),
    ]


class RequestMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, lifecycle: Lifecycle, metrics: Metrics) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        metrics.in_flight.set_function(lambda: lifecycle.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(id=_request_id(scope))
        scope[_SCOPE_KEY] = record
        status = 0  # until the response starts; 500 if the app raises before that

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *self._headers(record)]
            await send(message)

        self.lifecycle.in_flight += 1
        try:
            if self.lifecycle.draining and scope["path"] not in _ALWAYS_SERVED:
                await _refuse(record, scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except asyncio.CancelledError:
            if not self.lifecycle.draining:
                raise
            # the grace time ran out mid-request: a retryable 503 rather than a dropped connection
            if not status:
                await _refuse(record, scope, receive, send_with_headers)
        except Exception as exc:
            log.error("internal error in request %s", record.id, exc_info=exc)
            if status:
                raise  # the answer has begun: nothing else can be sent; uvicorn closes the connection
            await _internal_error(record, scope, receive, send_with_headers)
        finally:
            status = status or 500
            self.lifecycle.in_flight -= 1
            self._account(scope, record, status)

    def _headers(self, record: RequestRecord) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-request-id", record.id.encode())]
        if record.result is not None:
            headers += _timing_headers(record.result, time.perf_counter() - record.started)
        return headers

    def _account(self, scope: Scope, record: RequestRecord, status: int) -> None:
        seconds = time.perf_counter() - record.started
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(route, record.model, str(status)).inc()
        if record.error:
            self.metrics.request_errors.labels(record.model, record.error).inc()
        result = record.result
        if result is not None and status == 200:
            timings = result.timings
            self.metrics.observe_request(
                record.model,
                seconds,
                result.tokens,
                tokenization=timings.tokenization,
                queue=timings.queue,
                inference=timings.inference,
            )
            self.metrics.observe_task(result.model.task, record.model, result.inputs)
        # probes and scrapes arrive every few seconds: keep them out of the default log level
        level = logging.DEBUG if scope["path"] in _ALWAYS_SERVED else logging.INFO
        access_log.log(level, "request", extra={"fields": _log_fields(scope, record, status, seconds)})


async def _refuse(record: RequestRecord, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 503 because the server is stopping, and close the connection."""
    record.error = "service_unavailable"
    refusal = envelope_of(scope).response(
        NotReady("The server is shutting down; retry on another replica.", retry_after=1), record.id
    )
    refusal.headers["connection"] = "close"
    await refusal(scope, receive, send)


async def _internal_error(record: RequestRecord, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer 500 with a message that names the request, for the operator's logs, and nothing else."""
    record.error = "internal_error"
    message = f"The server had an internal error; its log has the details under request id {record.id}."
    error = KeepwarmError(message, code="internal_error")
    await envelope_of(scope).response(error, record.id)(scope, receive, send)


def _request_id(scope: Scope) -> str:
    """The caller's X-Request-ID if it is a plain token, else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


def _log_fields(scope: Scope, record: RequestRecord, status: int, seconds: float) -> dict[str, object]:
    """The access-log line: what happened and for whom, never input text or key secrets."""
    fields: dict[str, object] = {
        "request_id": record.id,
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "client": (scope.get("client") or ("", 0))[0],
    }
    if record.key is not None:
        fields["key"] = record.key.label
    if record.model:
        fields["model"] = record.model
    if record.error:
        fields["error"] = record.error
    if record.result is not None:
        timings = record.result.timings
        fields |= {
            "task": record.result.model.task,
            "inputs": record.result.inputs,
            "tokens": record.result.tokens,
            "tokenization_ms": round(timings.tokenization * 1000, 2),
            "queue_ms": round(timings.queue * 1000, 2),
            "inference_ms": round(timings.inference * 1000, 2),
        }
    return fields
