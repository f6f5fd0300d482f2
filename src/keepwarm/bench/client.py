"""Load generators: many concurrent OpenAI-style clients against one keepwarm server.

The client shares the machine with the server it measures, so it must cost little:
aiohttp (C HTTP parser, keep-alive pool), request bodies serialised before the clock
starts, base64 responses (what the `openai` client asks for) decoded with NumPy, and
uvloop when installed. Every phase also records the client's own CPU time, so the
report can show how much of the machine the load generator took.

Three shapes of load:
- closed loop: C clients, each sending its next request as soon as the last returns;
- bursts: N requests at once, then silence until the next burst;
- idle: one request at a time with a pause between, for latency at rest.

A request the server fails (an error status, a dropped connection) is counted in the
phase's `failures` and the load goes on; only an answer that is not the embeddings
asked for stops the run (`LoadError`), as does any failure while warming up.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass

import aiohttp
import numpy as np
import orjson

from keepwarm.bench.stats import Measurement

Progress = Callable[[int], None]  # called with the number of texts just completed
_HEADERS = {"content-type": "application/json"}
# The client closes a connection left idle this long itself, before the server's keep-alive
# timeout (uvicorn's default and many servers': 5 s) closes it: a request written into a
# connection the server is closing at that moment fails ("Can not write request body").
# Between bursts, connections whose answers came early in a burst sit idle for longer.
IDLE_CONNECTION_SECONDS = 2.0


class LoadError(RuntimeError):
    """The server answered a benchmark request with something other than embeddings."""


@dataclass(frozen=True)
class Request:
    """One prepared request: which corpus texts it carries, and its encoded body."""

    first: int
    count: int
    body: bytes


def prepare(
    model: str,
    texts: list[str],
    per_request: int,
    outputs: tuple[str, ...] = ("dense",),
    *,
    truncate: bool | None = True,
) -> list[Request]:
    """Cut the texts into requests of `per_request` texts, bodies serialised once up front.

    Long texts are truncated to the model's limit, as the in-process baselines do;
    `truncate=None` leaves them to the model's `overflow` setting (e.g. chunking). `outputs`
    beyond dense are asked for too (and answered from the same model calls).
    """
    options = {"encoding_format": "base64"} | ({} if truncate is None else {"truncate": truncate})
    if outputs != ("dense",):
        options["outputs"] = list(outputs)
    return [
        Request(start, len(chunk), orjson.dumps({"model": model, "input": chunk, **options}))
        for start in range(0, len(texts), per_request)
        if (chunk := texts[start : start + per_request])
    ]


def _decode(payload: bytes, expected: int) -> tuple[np.ndarray, int, int]:
    """Vectors, tokens, and how many inputs the server answered from its cache (not computed)."""
    answer = orjson.loads(payload)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != expected:
        raise LoadError(f"expected {expected} embeddings, got: {payload[:300]!r}")
    vectors = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data])
    cached = (answer.get("cache") or {}).get("cached_inputs") or 0
    return vectors, int(answer["usage"]["prompt_tokens"]), int(cached)


def _server_times(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """A keepwarm server's own total and model-call seconds for a request (None from other servers)."""
    try:
        return float(headers["x-total-time"]) / 1000, float(headers["x-inference-time"]) / 1000
    except (KeyError, ValueError):
        return None


class LoadClient:
    """A pool of keep-alive connections to one server, and the vectors it got back."""

    def __init__(self, url: str, connections: int, api_key: str | None = None) -> None:
        self.endpoint = f"{url.rstrip('/')}/v1/embeddings"
        self.connections = connections
        self.headers = {**_HEADERS, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self.vectors: dict[int, np.ndarray] = {}  # first corpus index of a request -> its vectors
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadClient:
        connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=IDLE_CONNECTION_SECONDS)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def send(self, request: Request, result: Measurement) -> None:
        """Post one request and record its latency and tokens, or count it in `result.failures`."""
        started = time.perf_counter()
        try:
            async with self._session.post(self.endpoint, data=request.body, headers=self.headers) as response:
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            result.fail(f"{type(error).__name__}: {error}")
            return
        latency = time.perf_counter() - started
        if response.status != 200:
            result.fail(f"HTTP {response.status}: {payload[:300].decode(errors='replace')}")
            return
        vectors, tokens, cached = _decode(payload, request.count)
        self.vectors[request.first] = vectors
        result.add(request.count, tokens, latency, _server_times(response.headers))
        result.cached += cached

    async def warm_up(self, requests: list[Request]) -> None:
        """Open every connection and wake the server with unrecorded requests; LoadError if any fails.

        A server that fails before the clock starts (a wrong key, a model it does not
        serve) is misconfigured: better said at once than as a phase of failures.
        """
        result = Measurement()
        await asyncio.gather(*(self.send(request, result) for request in requests[: self.connections]))
        if result.failures:
            raise LoadError(f"the server failed warm-up requests: {dict(result.failures)}")

    async def closed_loop(
        self, requests: list[Request], clients: int, progress: Progress, deadline: float
    ) -> Measurement:
        """`clients` workers share the request list, each sending as soon as its last answer arrives."""
        pending: Iterator[Request] = iter(requests)
        result = Measurement()

        async def worker() -> None:
            for request in pending:
                if time.perf_counter() > deadline:
                    return
                await self.send(request, result)
                progress(request.count)

        with result.timed():
            await asyncio.gather(*(worker() for _ in range(clients)))
        return result

    async def bursts(
        self, requests: list[Request], size: int, gap: float, progress: Progress, deadline: float
    ) -> Measurement:
        """Send `size` requests at once, wait for all, then `gap` s of silence; only busy time counts."""
        result = Measurement()
        busy = 0.0
        with result.timed():
            for start in range(0, len(requests), size):
                if start:
                    await asyncio.sleep(gap)
                if time.perf_counter() > deadline:
                    break
                burst = requests[start : start + size]
                began = time.perf_counter()
                await asyncio.gather(*(self.send(request, result) for request in burst))
                busy += time.perf_counter() - began
                progress(sum(request.count for request in burst))
        result.seconds = busy
        return result

    async def idle(self, request: Request, count: int, gap: float, progress: Progress) -> Measurement:
        """`count` lone requests, `gap` seconds apart, so each meets an idle server."""
        result = Measurement()
        with result.timed():
            for _ in range(count):
                await asyncio.sleep(gap)
                await self.send(request, result)
                progress(request.count)
        result.seconds = sum(result.latencies)
        return result


def run_phase(
    url: str, connections: int, api_key: str | None, phase: Callable[[LoadClient], Awaitable[Measurement]]
) -> tuple[Measurement, dict[int, np.ndarray]]:
    """Run one load phase with a fresh, warmed-up client on a fresh event loop (uvloop when installed)."""

    async def main() -> tuple[Measurement, dict[int, np.ndarray]]:
        async with LoadClient(url, connections, api_key) as client:
            result = await phase(client)
            return result, client.vectors

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
