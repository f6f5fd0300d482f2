"""Prometheus metrics, one registry per application so several servers can share a process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _QueueCollector(Collector):
    """Reads each model's queue depth at scrape time, so it is never stale."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], int]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("keepwarm_queue_tokens", "Tokens waiting in each model's queue", labels=["model"])
        for model, read in self.sources.items():
            family.add_metric([model], read())
        yield family


class Metrics:
    """What the engine and the HTTP layer report about their work."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keepwarm_requests", "HTTP requests answered, by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "keepwarm_batch_rows", "Inputs per model call", ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "keepwarm_batch_tokens", "Real (unpadded) tokens per model call", ["model"],
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536), registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "keepwarm_inference_seconds", "Time of one model call", ["model"], registry=self.registry,
        )
        self._queues = _QueueCollector()
        self.registry.register(self._queues)
        self.cache_lookups = Counter(
            "keepwarm_cache_lookups", "Embedding cache lookups by result (hit or miss)", ["result"],
            registry=self.registry,
        )
        self.inputs_dropped = Counter(
            "keepwarm_inputs_dropped", "Queued inputs dropped because their client went away", ["model"],
            registry=self.registry,
        )

    def track_queue(self, model: str, read: Callable[[], int]) -> None:
        """Report `read()` as the model's queue depth."""
        self._queues.sources[model] = read

    def observe_batch(self, model: str, rows: int, tokens: int, seconds: float) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_tokens.labels(model).observe(tokens)
        self.inference_seconds.labels(model).observe(seconds)
