"""What one measured phase produced, and the figures reported for it."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Measurement:
    """Work done in `seconds` of wall time, with one latency per request (or call)."""

    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cached: int = 0  # texts a server answered from its embedding cache instead of computing them
    failures: Counter[str] = field(default_factory=Counter)  # requests that failed, by reason
    cpu_seconds: float | None = None  # the measuring process's own CPU time, all threads...
    wall_seconds: float | None = None  # ...over this span (bursts and idle phases include their pauses)
    # the server's own account of each answered request, from its timing headers, so that a
    # latency splits into the model call, the rest of the server, and what lies outside it
    # (the HTTP exchange and the client): seconds, one entry per request that sent them
    server: list[float] = field(default_factory=list)
    inference: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Set the wall time and this process's CPU time (all its threads) of the enclosed work."""
        cpu, began = time.process_time(), time.perf_counter()
        yield
        self.seconds = self.wall_seconds = time.perf_counter() - began
        self.cpu_seconds = time.process_time() - cpu

    def add(self, texts: int, tokens: int, latency: float, server: tuple[float, float] | None = None) -> None:
        """One answered request; `server`: its (total, inference) seconds as the server reported them."""
        self.texts += texts
        self.tokens += tokens
        self.latencies.append(latency)
        if server is not None:
            self.server.append(server[0])
            self.inference.append(server[1])
            self.outside.append(latency - server[0])

    def fail(self, reason: str) -> None:
        """Count one failed request: no texts, and no latency among the answered ones."""
        self.failures[reason] += 1

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return percentile_ms(self.latencies, q)

    def summary(self) -> dict[str, Any]:
        """The reported figures: throughput, latency percentiles in ms, and CPU used."""
        return {
            "texts": self.texts,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 4),
            "calls": len(self.latencies),
            "texts_per_s": round(self.texts_per_second, 2),
            "tokens_per_s": round(self.tokens_per_second, 1),
            "p50_ms": _round(self.percentile_ms(50)),
            "p95_ms": _round(self.percentile_ms(95)),
            "p99_ms": _round(self.percentile_ms(99)),
            "cpu_seconds": _round(self.cpu_seconds),
            "cached_texts": self.cached,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
        } | self._server_split()

    def _server_split(self) -> dict[str, float | None]:
        """Median server, model-call and outside-the-server time, where the server reported them."""
        if not self.server:
            return {}
        return {
            "server_p50_ms": _round(percentile_ms(self.server, 50)),
            "server_inference_p50_ms": _round(percentile_ms(self.inference, 50)),
            "outside_server_p50_ms": _round(percentile_ms(self.outside, 50)),
        }

    def cpu_share(self, cpu_seconds: float | None, cores: int) -> float | None:
        """`cpu_seconds` as a share of what `cores` cores could do over this measurement's span."""
        span = self.wall_seconds or self.seconds
        return round(cpu_seconds / (span * cores), 4) if cpu_seconds is not None and span else None


def percentile_ms(latencies: list[float], q: float) -> float | None:
    """The q-th percentile of latencies given in seconds, in milliseconds (None without any)."""
    return float(np.percentile(latencies, q) * 1000) if latencies else None


def latency_summary(latencies: list[float], quantiles: tuple[int, ...]) -> dict[str, float | None]:
    """Request count, `p<q>_ms` for each quantile, and the mean, in milliseconds."""
    summary: dict[str, float | None] = {"requests": len(latencies)}
    summary |= {f"p{q}_ms": _round(percentile_ms(latencies, q)) for q in quantiles}
    summary["mean_ms"] = _round(float(np.mean(latencies)) * 1000 if latencies else None)
    return summary


def best(runs: list[Measurement]) -> Measurement:
    """The fastest of repeated runs: on a shared machine, noise only ever slows a run down."""
    return max(runs, key=lambda run: run.texts_per_second)


def best_latency(runs: list[Measurement]) -> Measurement:
    """The repeat with the lowest median latency (same reasoning as `best`)."""
    return min(runs, key=lambda run: run.percentile_ms(50) or float("inf"))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
