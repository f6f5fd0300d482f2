"""Joining a Ray cluster, or starting one on this machine, for `keepwarm serve|reembed --ray`."""

from __future__ import annotations

import logging

import ray

log = logging.getLogger(__name__)

LOCAL = "local"  # `--ray` without an address: start a cluster on this machine


def join(address: str) -> None:
    """Join the cluster at `address` (`host:port` of its head) or start a local one (`local`)."""
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    resources = ray.cluster_resources()
    log.info(
        "joined Ray cluster (%s): %d node(s), %g CPU(s), %g GPU(s)",
        "started here" if address == LOCAL else address,
        len([node for node in ray.nodes() if node["Alive"]]),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
