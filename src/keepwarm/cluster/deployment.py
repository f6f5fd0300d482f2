"""From a catalog entry to its Ray Serve deployment: one Serve application per model version.

A version is its own application, so each scales alone and a reload can add or remove
versions without touching the others. Replicas, resources and autoscaling bounds come
from the catalog (docs/catalog.md); a fixed `replicas` count unless `min_replicas` and
`max_replicas` are set, which autoscale on requests in flight per replica.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from keepwarm.catalog import ModelSpec
from keepwarm.catalog.versions import short_version
from keepwarm.cluster.replica import ModelReplica
from keepwarm.engine import EngineSettings

# Requests one replica accepts at once: its engine batches them, so many in flight is the point.
MAX_ONGOING_REQUESTS = 64
_DEPLOYMENT_NAME = "model"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def start_serve() -> None:
    """Start Serve on the cluster (a no-op if it runs), its HTTP proxies off.

    keepwarm's ingress is the HTTP server; it reaches the model deployments through
    their handles, so Serve's own proxies would only be a second, unused way in.
    """
    serve.start(proxy_location="Disabled")


def app_name(spec: ModelSpec, version: str) -> str:
    """The Serve application of one version: `keepwarm-<name>-<short version>`."""
    return f"keepwarm-{_UNSAFE.sub('_', spec.name)}-{short_version(version)}"


def deployment_options(spec: ModelSpec) -> dict[str, Any]:
    """Serve's options for a version's deployment, from its catalog entry."""
    options: dict[str, Any] = {
        "name": _DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": spec.replica_cpus, "num_gpus": spec.replica_gpus},
        "max_ongoing_requests": MAX_ONGOING_REQUESTS,
        "health_check_period_s": 2.0,
        "graceful_shutdown_timeout_s": 30.0,  # requests in flight on a replica being replaced finish
        "logging_config": {"enable_access_log": False},
    }
    if spec.max_replicas is None:
        options["num_replicas"] = spec.replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": spec.min_replicas,
            "max_replicas": spec.max_replicas,
            "target_ongoing_requests": spec.target_ongoing_requests,
        }
    return options


def replica_spec(spec: ModelSpec) -> ModelSpec:
    """The version as its replicas serve it: the bare name's meaning there, loaded at start, kept.

    The ingress resolves names, aliases and pins, and scaling is Serve's, so which version
    is current, its aliases and its load policy are none of a replica's business.
    """
    return replace(spec, current=True, aliases=(), load="eager", idle_timeout=0.0)


def unchanged(deployed: ModelSpec, spec: ModelSpec) -> bool:
    """Whether `spec` would deploy exactly what `deployed` did, so a reload can leave it running.

    Serve takes every imperative deploy for new code and replaces all of its replicas, so
    a reload deploys again only the versions whose replicas would differ.
    """
    same_replicas = replica_spec(deployed) == replica_spec(spec)
    return same_replicas and deployment_options(deployed) == deployment_options(spec)


def deploy(
    spec: ModelSpec, version: str, data_dir: Path, settings: EngineSettings, log_level: str
) -> DeploymentHandle:
    """Deploy (or update in place, rolling its replicas) one version; returns once it is running."""
    model = serve.deployment(ModelReplica).options(**deployment_options(spec))
    return serve.run(
        model.bind(replica_spec(spec), data_dir, settings, log_level),
        name=app_name(spec, version),
        route_prefix=None,
    )


def undeploy(spec: ModelSpec, version: str) -> None:
    """Remove a version's application; Serve lets its replicas finish what they are answering."""
    serve.delete(app_name(spec, version))
