"""The replicas' model work on the ingress's `/metrics`: each replica reports, the ingress merges.

A replica's engine records its batches, queue and model calls in a prometheus_client
registry of its own, exactly as in one process. Every `REPORT_SECONDS` a replica sends
those families (`ENGINE_FAMILIES`), each sample labelled with its Serve replica id, to
the board: one small named actor on the cluster that keeps each replica's latest
report. Whenever an ingress's registry is read (`/metrics`, the dashboard's sampler) it
reads the board and merges the replicas' samples into its own families of the same
names, so one scrape of an ingress shows the metric names of one process: the
ingress's HTTP series, and one series per replica for the model work. A replica that
stops (removed, killed, its node lost) drops out after `STALE_SECONDS`, at once when it
stops cleanly.

Pushing to a board rather than asking each replica is what Serve allows: a deployment
handle reaches *a* replica, never a chosen one. Ray's own metrics (ray.util.metrics,
exported per node) would rename every family and need a scrape target per node;
docs/scaling.md says what a Prometheus user sees.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import ray
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from ray.actor import ActorHandle
from ray.exceptions import RayError

from keepwarm.metrics import ENGINE_FAMILIES

log = logging.getLogger(__name__)

REPORT_SECONDS = 2.0  # how often a replica reports: its series on an ingress lag by up to this
STALE_SECONDS = 30.0  # a replica silent this long is taken for gone
REPLICA_LABEL = "replica"  # Serve's replica id, the value of the `replica` tag on Ray Serve's own metrics
_READ_TIMEOUT = 2.0
_BOARD = "keepwarm-replica-metrics"
_NAMESPACE = "keepwarm"

Report = list[Metric]


class MetricsBoard:
    """The latest report of every replica on the cluster (run as one named Ray actor)."""

    def __init__(self) -> None:
        self._reports: dict[str, tuple[float, Report]] = {}

    def report(self, replica: str, families: Report) -> None:
        self._reports[replica] = (time.monotonic(), families)

    def remove(self, replica: str) -> None:
        self._reports.pop(replica, None)

    def reports(self) -> list[Report]:
        """Every live replica's latest report; the reports of replicas gone silent are dropped."""
        oldest = time.monotonic() - STALE_SECONDS
        self._reports = {replica: kept for replica, kept in self._reports.items() if kept[0] >= oldest}
        return [families for _, families in self._reports.values()]


def board() -> ActorHandle:
    """The cluster's board, started by whichever replica or ingress asks first.

    Detached, like the deployments: it outlives the ingress that started it, and serves
    every ingress of the cluster.
    """
    options = {"name": _BOARD, "namespace": _NAMESPACE, "lifetime": "detached", "get_if_exists": True}
    return ray.remote(MetricsBoard).options(**options, num_cpus=0, max_restarts=-1).remote()


class Reporter:
    """Sends one replica's engine families to the board every `REPORT_SECONDS`, from a thread."""

    def __init__(self, registry: CollectorRegistry, replica: str) -> None:
        self._registry = registry
        self._replica = replica
        self._board: ActorHandle | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keepwarm-metrics-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reporting and take this replica off the board at once (not after STALE_SECONDS)."""
        self._stopped.set()
        self._thread.join(timeout=REPORT_SECONDS * 2)
        if self._board is not None:
            self._board.remove.remote(self._replica)

    def _run(self) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                self._board = self._board or board()
                self._board.report.remote(self._replica, labelled(self._registry, self._replica))
                failing = False
            except Exception as error:  # the board restarting, the GCS away: this thread must go on
                if not failing:
                    log.warning("could not report this replica's metrics (trying again): %s", error)
                failing, self._board = True, None
            self._stopped.wait(REPORT_SECONDS)


def labelled(registry: CollectorRegistry, replica: str) -> Report:
    """The registry's engine families, every sample labelled with `replica`."""
    families = [family for family in registry.collect() if family.name in ENGINE_FAMILIES]
    for family in families:
        family.samples = [s._replace(labels={**s.labels, REPLICA_LABEL: replica}) for s in family.samples]
    return families


class ClusterRegistry(CollectorRegistry):
    """An ingress's registry: its own families, each read merged with the replicas' latest reports."""

    def __init__(self) -> None:
        super().__init__()
        self._board: ActorHandle | None = None

    def collect(self) -> Iterator[Metric]:
        families = {family.name: family for family in super().collect()}  # fresh objects on every read
        for report in self._reports():
            for family in report:
                if family.name in families:
                    families[family.name].samples.extend(family.samples)
                else:
                    families[family.name] = family
        yield from families.values()

    def _reports(self) -> list[Report]:
        try:
            self._board = self._board or board()
            return ray.get(self._board.reports.remote(), timeout=_READ_TIMEOUT)
        except RayError as error:  # the ingress's own series are still worth answering with
            log.warning("the replicas' metrics are left out of this read: %s", error)
            self._board = None
            return []
