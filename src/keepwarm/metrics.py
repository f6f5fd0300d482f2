"""Prometheus metrics, one registry per application so several servers can share a process.

Counters are exported with prometheus-client's `_total` suffix. Per-model gauges (queue
depth, throughput, load time) are read at scrape time, so they are never stale. The
engine and the HTTP layer both report here, so this module takes plain numbers and
imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The families the engine records (the HTTP layer records the others): on a Ray cluster each replica
# reports these to the ingress's /metrics (cluster/metrics.py).
ENGINE_FAMILIES = frozenset(
    {
        "keepwarm_queue_tokens",
        "keepwarm_tokens_per_second",
        "keepwarm_model_load_seconds",
        "keepwarm_batch_rows",
        "keepwarm_batch_tokens",
        "keepwarm_batch_padded_tokens",
        "keepwarm_inference_seconds",
        "keepwarm_inference_failures",
        "keepwarm_cache_lookups",
        "keepwarm_inputs_dropped",
    }
)

# request latencies, from sub-millisecond tokenization to minute-long queue waits
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _ModelGauges(Collector):
    """Per-model values read from the engine at scrape time."""

    def __init__(self) -> None:
        self.queues: dict[str, Callable[[], int]] = {}
        self.throughputs: dict[str, Callable[[], float]] = {}
        self.load_seconds: dict[str, float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield _family("keepwarm_queue_tokens", "Tokens waiting in each model's queue", self.queues)
        yield _family(
            "keepwarm_tokens_per_second",
            "Recent model throughput (moving average over batches)",
            self.throughputs,
        )
        yield _family(
            "keepwarm_model_load_seconds",
            "Time to load (or export), then warm up each model",
            {model: (lambda s=seconds: s) for model, seconds in self.load_seconds.items()},
        )


def _family(name: str, documentation: str, sources: dict[str, Callable[[], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["model"])
    for model, read in sources.items():
        family.add_metric([model], read())
    return family


class Metrics:
    """What the engine and the HTTP layer report about their work (into `registry`, a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = CollectorRegistry() if registry is None else registry
        self.requests = Counter(
            "keepwarm_requests",
            "HTTP requests answered, by route, model and status",
            ["route", "model", "status"],
            registry=registry,
        )
        self.request_errors = Counter(
            "keepwarm_request_errors",
            "Error responses by model and error code",
            ["model", "code"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "keepwarm_requests_in_flight", "HTTP requests being handled", registry=registry
        )
        self.connections_open = Gauge("keepwarm_connections_open", "HTTP connections open", registry=registry)
        self.connections_cut = Counter(
            "keepwarm_connections_cut",
            "Connections the server closed for breaking an HTTP limit, by reason",
            ["reason"],
            registry=registry,
        )
        self.request_seconds = self._latency(
            "keepwarm_request_duration_seconds", "Embedding request, arrival to answer"
        )
        self.tokenization_seconds = self._latency(
            "keepwarm_request_tokenization_seconds", "Tokenizing one request's inputs"
        )
        self.queue_seconds = self._latency(
            "keepwarm_request_queue_seconds", "Wait from queueing to the request's first model call"
        )
        self.request_inference_seconds = self._latency(
            "keepwarm_request_inference_seconds", "From the request's first model call to its last vector"
        )
        self.request_tokens = Counter(
            "keepwarm_request_tokens",
            "Tokens embedded for answered requests",
            ["model"],
            registry=registry,
        )
        self.batch_rows = Histogram(
            "keepwarm_batch_rows",
            "Inputs per model call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.batch_tokens = Histogram(
            "keepwarm_batch_tokens",
            "Real (unpadded) tokens per model call",
            ["model"],
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=registry,
        )
        self.batch_padded_tokens = Histogram(
            "keepwarm_batch_padded_tokens",
            "Tokens per model call, padding included (rows × the width the call is padded to)",
            ["model"],
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536),
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "keepwarm_inference_seconds",
            "Time of one model call",
            ["model"],
            registry=registry,
        )
        self.inference_failures = Counter(
            "keepwarm_inference_failures",
            "Model calls that raised (a failed batch is retried in halves)",
            ["model"],
            registry=registry,
        )
        self.cache_lookups = Counter(
            "keepwarm_cache_lookups",
            "Embedding cache lookups by result (hit or miss)",
            ["result"],
            registry=registry,
        )
        self.inputs_dropped = Counter(
            "keepwarm_inputs_dropped",
            "Queued inputs dropped uncomputed (client gone, or deadline passed)",
            ["model"],
            registry=registry,
        )
        self.task_requests = Counter(
            "keepwarm_task_requests",
            "Answered requests by task (embed, rerank, classify) and model",
            ["task", "model"],
            registry=registry,
        )
        self.task_inputs = Counter(
            "keepwarm_task_inputs",
            "Inputs answered by task and model: texts embedded or classified, documents reranked",
            ["task", "model"],
            registry=registry,
        )
        self._models = _ModelGauges()
        registry.register(self._models)

    def _latency(self, name: str, documentation: str) -> Histogram:
        return Histogram(name, documentation, ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry)

    def track_queue(self, model: str, read: Callable[[], int]) -> None:
        """Report `read()` as the model's queue depth."""
        self._models.queues[model] = read

    def track_model(self, model: str, load_seconds: float, tokens_per_second: Callable[[], float]) -> None:
        """Report a loaded model's load time and live throughput."""
        self._models.load_seconds[model] = load_seconds
        self._models.throughputs[model] = tokens_per_second

    def observe_batch(
        self, model: str, rows: int, tokens: int, padded: int, seconds: float, failures: int = 0
    ) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_tokens.labels(model).observe(tokens)
        self.batch_padded_tokens.labels(model).observe(padded)
        self.inference_seconds.labels(model).observe(seconds)
        if failures:
            self.inference_failures.labels(model).inc(failures)

    def observe_task(self, task: str, model: str, inputs: int) -> None:
        """An answered request of `task` and how many inputs (texts, documents) it answered."""
        self.task_requests.labels(task, model).inc()
        self.task_inputs.labels(task, model).inc(inputs)

    def observe_request(
        self, model: str, seconds: float, tokens: int, *, tokenization: float, queue: float, inference: float
    ) -> None:
        """An answered embedding request: its latencies (in seconds) and tokens."""
        self.request_seconds.labels(model).observe(seconds)
        self.tokenization_seconds.labels(model).observe(tokenization)
        self.queue_seconds.labels(model).observe(queue)
        self.request_inference_seconds.labels(model).observe(inference)
        self.request_tokens.labels(model).inc(tokens)
