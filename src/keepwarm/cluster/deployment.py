"""From a catalog entry to its Ray Serve deployment: one Serve application per model version.

A version is its own application, so each scales alone and a reload can add or remove
versions without touching the others. Replicas, resources and autoscaling bounds come
from the catalog (docs/catalog.md); a fixed `replicas` count unless `min_replicas` and
`max_replicas` are set, which autoscale on requests in flight per replica.

Serve takes every imperative deploy (`serve.run`) for new code and replaces all of its
replicas, so a version is deployed only when its replicas would differ: a digest of
everything they are made from is kept in the cluster's key-value store beside the
application, and an ingress that finds its version running under the same digest (a
reload that left it alone, a second ingress, a restarted one) takes the running
replicas over instead of replacing them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import serve
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_put
from ray.serve.handle import DeploymentHandle

from keepwarm.catalog import ModelSpec
from keepwarm.catalog.versions import short_version
from keepwarm.cluster.replica import ModelReplica
from keepwarm.engine import EngineSettings

# Requests one replica accepts at once: its engine batches them, so many in flight is the point.
MAX_ONGOING_REQUESTS = 64
_DEPLOYMENT_NAME = "model"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_DIGESTS = "keepwarm-deployments"  # the key-value namespace: application name -> its replicas' digest


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


def digest(spec: ModelSpec, data_dir: Path, settings: EngineSettings, log_level: str) -> str:
    """What a version's replicas are made from, as a digest: equal digests, identical replicas.

    A catalog change that only the ingress sees (current, aliases, load) leaves it as it is.
    """
    made_of = (replica_spec(spec), deployment_options(spec), str(data_dir), settings, log_level)
    return hashlib.sha256(repr(made_of).encode()).hexdigest()


def running(spec: ModelSpec, version: str, made_as: str) -> DeploymentHandle | None:
    """The version's application if it runs with replicas made as `made_as` says (by any ingress)."""
    name = app_name(spec, version)
    if _internal_kv_get(name, namespace=_DIGESTS) != made_as.encode():
        return None
    application = serve.status().applications.get(name)
    if application is None or application.status != "RUNNING":
        return None
    return serve.get_app_handle(name)


def deploy(
    spec: ModelSpec, version: str, data_dir: Path, settings: EngineSettings, log_level: str
) -> DeploymentHandle:
    """Deploy (or update in place, rolling its replicas) one version; returns once it is running."""
    model = serve.deployment(ModelReplica).options(**deployment_options(spec))
    name = app_name(spec, version)
    handle = serve.run(
        model.bind(replica_spec(spec), data_dir, settings, log_level), name=name, route_prefix=None
    )
    _internal_kv_put(name, digest(spec, data_dir, settings, log_level), namespace=_DIGESTS)
    return handle


def undeploy(spec: ModelSpec, version: str) -> None:
    """Remove a version's application; Serve lets its replicas finish what they are answering."""
    name = app_name(spec, version)
    _internal_kv_del(name, namespace=_DIGESTS)
    serve.delete(name)
