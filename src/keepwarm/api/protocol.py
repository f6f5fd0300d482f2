"""HTTP/1.1 connections with limits: what one client may hold open, send, and stall.

uvicorn's httptools protocol has no limit on the size of a request's head, no timeout
for a head or a body that stops arriving (a connection that sends nothing is never
closed), and its concurrency limit answers only once a head is complete. A client could
hold gigabytes with one endless header, or every socket with idle connections. This
subclass adds, before any request reaches the app (settings: api.settings.ConnectionLimits):

- a cap on open connections: one more is answered 503 at once and closed;
- a cap on the request line and headers: 431, counted as the bytes arrive, so an endless
  header is cut off after the limit rather than buffered;
- a deadline for the head, from the connection's opening (or a later request's first
  byte) to the end of its headers: 408, however slowly the bytes trickle in;
- a body must keep arriving: at most `body_timeout` seconds between two reads, and on
  average `min_body_rate` bytes/s after its first `body_timeout` seconds: 408. Time the
  app takes to read what already came (flow control, `Expect: 100-continue`) counts
  for the client, never against it.

Every refusal is OpenAI's error envelope with `Connection: close`. The server then
stops parsing, reads and drops whatever the client still sends for a moment (so the
client can read the answer instead of meeting a reset), and closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from keepwarm.api.envelopes import OPENAI
from keepwarm.api.settings import ConnectionLimits
from keepwarm.errors import HeadersTooLarge, InvalidRequest, KeepwarmError, NotReady, RequestTimeout
from keepwarm.metrics import Metrics

log = logging.getLogger(__name__)

# After a refusal: how long to keep reading (and dropping) what the client still sends, so
# its unread bytes do not make the close a reset that destroys the answer on its way.
_LINGER_SECONDS = 2.0
_HEAD_END = b"\r\n\r\n"


def _raw_response(error: KeepwarmError) -> bytes:
    """`error` as a complete HTTP/1.1 response that closes the connection."""
    response = OPENAI.response(error, "")  # before any route: the first dialect's envelope
    lines = [b"HTTP/1.1 %d %s" % (response.status_code, HTTPStatus(response.status_code).phrase.encode())]
    lines += [name + b": " + value for name, value in response.raw_headers]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with ConnectionLimits enforced (see the module docstring).

    uvicorn makes one per connection; give it to `uvicorn.Config(http=...)` as
    `functools.partial(LimitedHttpProtocol, limits=..., metrics=...)`.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
        metrics: Metrics,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.metrics = metrics
        self._head_bytes: int | None = 0  # bytes of the request head so far; None while a body is due
        self._tail = b""  # the head's last bytes, to find its end when "\r\n\r\n" spans two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = self._body_last = 0.0  # when the body was due, and when it last arrived
        self._body_bytes = 0
        self._closing: asyncio.TimerHandle | None = None  # set once refused

    # -- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            refusal = NotReady("The server has too many open connections; retry shortly.", retry_after=1)
            self._refuse(refusal, "too_many_connections")
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        if self._closing is not None:
            self._closing.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing is not None:
            return  # refused: drop what still arrives while the answer goes out
        if self._head_bytes is not None and not self._count_head(data):
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to unparsable HTTP, as an envelope, closed like every refusal."""
        self._refuse(InvalidRequest(msg), "invalid_http")

    # -- parser callbacks -------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._stop_timers()
        super().on_headers_complete()
        self._restart_body_clock()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_last = self.loop.time()
        self._body_bytes += len(body)
        self._arm_body_timer(min(self._body_deadlines()) - self._body_last)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_timers()
        self._head_bytes, self._tail = 0, b""  # the next request's head, whenever it comes

    # -- the limits -------------------------------------------------------------------------

    def _count_head(self, data: bytes) -> bool:
        """Add the head's bytes in `data`; False once over the limit (the connection is refused)."""
        if self._head_timer is None:  # a later request on this connection has begun
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        window = self._tail + data
        end = window.find(_HEAD_END)
        self._head_bytes += len(data) if end < 0 else end + len(_HEAD_END) - len(self._tail)
        self._tail = window[-(len(_HEAD_END) - 1) :]
        if self._head_bytes <= self.limits.max_header_bytes:
            return True
        limit = self.limits.max_header_bytes
        self._refuse(
            HeadersTooLarge(f"The request line and headers are over the limit of {limit} bytes."),
            "header_too_large",
        )
        return False

    def _body_deadlines(self) -> tuple[float, float]:
        """When the body is late: after a pause of `body_timeout`, and once below the minimum rate."""
        limits = self.limits
        pause = self._body_last + limits.body_timeout
        if not limits.min_body_rate:
            return pause, math.inf
        return pause, self._body_started + limits.body_timeout + self._body_bytes / limits.min_body_rate

    def _restart_body_clock(self) -> None:
        """The body is due from now (its headers just ended, or the app was not reading)."""
        self._body_started = self._body_last = self.loop.time()
        self._body_bytes = 0
        self._arm_body_timer(self.limits.body_timeout)  # until on_message_complete, which may follow at once

    def _arm_body_timer(self, delay: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_later(max(0.0, delay), self._body_timed_out)

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        seconds = self.limits.header_timeout
        self._refuse(
            RequestTimeout(f"The request's headers did not arrive within {seconds:g}s."), "header_timeout"
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            # the app has not yet read what came, or not yet asked for the body: the wait is ours
            self._restart_body_clock()
            return
        limits = self.limits
        pause, too_slow = self._body_deadlines()
        self._refuse(
            RequestTimeout(
                f"The request body stopped arriving: no data for {limits.body_timeout:g}s."
                if pause <= too_slow
                else f"The request body arrived slower than {limits.min_body_rate} bytes/s."
            ),
            "body_timeout",
        )

    def _refuse(self, error: KeepwarmError, reason: str) -> None:
        """Answer `error` where HTTP still allows an answer, parse nothing more, and close shortly."""
        self._stop_timers()
        self.metrics.connections_cut.labels(reason).inc()
        peer = self.transport.get_extra_info("peername")
        log.info("closing a connection from %s (%s): %s", peer[0] if peer else "?", reason, error.message)
        cycle = self.cycle
        # a head still arriving has no answer of its own yet; a body's request may already be answered
        answer = (
            (cycle is None or cycle.response_complete)
            if self._head_bytes is not None
            else (not cycle.response_started)
        )
        if answer:
            self.transport.write(_raw_response(error))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app sees the client gone; anything it still sends is dropped
            cycle.message_event.set()
        self._unset_keepalive_if_required()
        if self.flow is not None:
            self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._closing = self.loop.call_later(_LINGER_SECONDS, self.transport.close)
