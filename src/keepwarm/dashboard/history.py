"""The last hour of the server's metrics, sampled from its Prometheus registry, for live charts.

Every `interval` seconds a thread reads the registry (the same numbers `/metrics`
serves) and turns the change since the previous read into one point: rates from
counter deltas, p50/p95 from histogram bucket deltas (interpolated inside a bucket
as Prometheus's `histogram_quantile` does), ratios from pairs of deltas, and gauges as
they are. Points are kept in a ring buffer long enough for `keep` seconds, so a
dashboard opened at any time has a full chart at once. Nothing here changes what the
registry records; a restart starts an empty history.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
Snapshot = dict[tuple[str, Labels], float]  # (sample name, labels) -> value, as read at one moment
Budgets = Callable[[], dict[str, int]]  # model version label -> padded tokens per model call

# the charts a point holds, each a mapping of line name to value (None: nothing to measure)
CHARTS = ("requests", "tokens", "latency", "queue", "batches", "cache", "errors")
_QUANTILES = (0.5, 0.95)


@dataclass(frozen=True)
class Point:
    """What happened in one sampling interval, ending at `t` (seconds since the epoch)."""

    t: float
    charts: dict[str, dict[str, float | None]]


def read_registry(registry: CollectorRegistry) -> Snapshot:
    """Every sample of the registry now."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count), ascending, ending at +Inf.

    None for an empty histogram. Inside a bucket, values are taken as spread evenly; in
    the +Inf bucket the answer is the highest finite bound, as in Prometheus.
    """
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


class _Change:
    """The change between two snapshots over `seconds`."""

    def __init__(self, before: Snapshot, after: Snapshot, seconds: float) -> None:
        self.before, self.after, self.seconds = before, after, seconds

    def by(
        self, name: str, label: str, keep: Callable[[dict[str, str]], bool] = lambda _: True
    ) -> dict[str, float]:
        """How much each `label` value's series of `name` grew (series summed; a reset counts from 0)."""
        grown: dict[str, float] = {}
        for (sample, labels), value in self.after.items():
            if sample != name:
                continue
            as_dict = dict(labels)
            if not keep(as_dict):
                continue
            change = value - self.before.get((sample, labels), 0.0)
            key = as_dict.get(label, "")
            grown[key] = grown.get(key, 0.0) + (change if change >= 0 else value)
        return grown

    def rate(
        self, name: str, label: str, keep: Callable[[dict[str, str]], bool] = lambda _: True
    ) -> dict[str, float]:
        return {key: grown / self.seconds for key, grown in self.by(name, label, keep).items()}

    def total(self, name: str) -> float:
        return sum(self.by(name, "").values())

    def buckets(self, histogram: str) -> list[tuple[float, float]]:
        """The histogram's bucket counts added in the interval, summed over every model."""
        return sorted((float(le), count) for le, count in self.by(f"{histogram}_bucket", "le").items())

    def current(self, name: str, label: str) -> dict[str, float]:
        """A gauge's values as last read."""
        return {
            dict(labels).get(label, ""): value
            for (sample, labels), value in self.after.items()
            if sample == name
        }


def _is_api_error(labels: dict[str, str]) -> bool:
    """An error answer of the API (the dashboard's own pages are not traffic)."""
    status = labels.get("status", "")
    return status.isdigit() and int(status) >= 400 and not labels.get("route", "").startswith("/dashboard")


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def measure(change: _Change, budgets: dict[str, int]) -> dict[str, dict[str, float | None]]:
    """One point's charts from the change over one interval."""
    latency: dict[str, float | None] = {}
    for stage in ("queue", "inference"):
        buckets = change.buckets(f"keepwarm_request_{stage}_seconds")
        for q in _QUANTILES:
            seconds = quantile(q, buckets)
            latency[f"{stage} p{round(q * 100)}"] = None if seconds is None else seconds * 1000
    calls = change.by("keepwarm_batch_padded_tokens_count", "model")
    padded = change.by("keepwarm_batch_padded_tokens_sum", "model")
    capacity = sum(count * budgets[label] for label, count in calls.items() if label in budgets)
    padded_total, real_total = sum(padded.values()), change.total("keepwarm_batch_tokens_sum")
    lookups = change.by("keepwarm_cache_lookups_total", "result")
    return {
        "requests": change.rate("keepwarm_request_duration_seconds_count", "model"),
        "tokens": change.rate("keepwarm_request_tokens_total", "model"),
        "latency": latency,
        "queue": change.current("keepwarm_queue_tokens", "model"),
        "batches": {
            "fill": _percent(_ratio(sum(padded[label] for label in calls if label in budgets), capacity)),
            "padding": _percent(_ratio(padded_total - real_total, padded_total)),
        },
        "cache": {"hit ratio": _percent(_ratio(lookups.get("hit", 0.0), sum(lookups.values())))},
        "errors": change.rate("keepwarm_requests_total", "status", _is_api_error),
    }


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else ratio * 100


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.3g}")


class MetricsHistory:
    """Samples a registry into a ring buffer of points; `start()` runs the sampling thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        interval: float = 5.0,
        keep: float = 3600.0,
        budgets: Budgets = dict,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.interval = interval
        self.keep = keep
        self._budgets = budgets
        self._clock = clock
        self._points: deque[Point] = deque(maxlen=math.ceil(keep / interval) + 1)
        self._last: tuple[float, Snapshot] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample every `interval` seconds on a daemon thread until `stop()`."""
        if self._thread is None:
            self.sample()
            self._thread = threading.Thread(target=self._run, name="keepwarm-dashboard-history", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> Point | None:
        """Read the registry now; the point for the interval since the last read (None at the first)."""
        now, snapshot = self._clock(), read_registry(self.registry)
        with self._lock:
            last, self._last = self._last, (now, snapshot)
        if last is None or now <= last[0]:
            return None
        charts = measure(_Change(last[1], snapshot, now - last[0]), self._budgets())
        point = Point(
            now, {chart: {k: _round(v) for k, v in lines.items()} for chart, lines in charts.items()}
        )
        with self._lock:
            self._points.append(point)
        return point

    def series(self, after: float | None = None) -> dict[str, Any]:
        """Points after `after` (all kept ones by default), one list per chart line, in time order."""
        with self._lock:
            points = [p for p in self._points if after is None or p.t > after]
        return {
            "interval": self.interval,
            "window": self.keep,
            "t": [math.ceil(p.t * 10) / 10 for p in points],  # rounded up: `after` never repeats a point
            "charts": {chart: _columns(chart, points) for chart in CHARTS},
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - one bad read must not end the history
                log.exception("could not sample the metrics for the dashboard")


def _columns(chart: str, points: Iterable[Point]) -> dict[str, list[float | None]]:
    points = list(points)
    names = sorted({name for point in points for name in point.charts[chart]})
    return {name: [point.charts[chart].get(name) for point in points] for name in names}
