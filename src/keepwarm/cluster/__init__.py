"""keepwarm on a Ray cluster: model versions as Ray Serve deployments, bulk jobs on Ray Data.

The HTTP app and the engine are the same ones a single process runs. `keepwarm serve
--ray` keeps the API (keys, limits, metering, versions, the Batch API) in its own
process and sends each embed call to the Ray Serve deployment of the exact version it
resolved to (cluster/engine.py); each replica of a deployment is an in-process Engine
serving that one version (cluster/replica.py). `keepwarm reembed --ray` runs the same
engine in a pool of Ray Data actors (reembed/ray.py). Ray is an optional dependency:
`pip install 'keepwarm[cluster]'`.
"""

from __future__ import annotations

from keepwarm.errors import ConfigError

INSTALL_HINT = "Ray is not installed: install it with `pip install 'keepwarm[cluster]'`"


def require_ray() -> None:
    """Stop with what to install when Ray is missing, before anything starts."""
    try:
        import ray.data  # noqa: F401
        import ray.serve  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
