"""Joining a Ray cluster, or starting one on this machine, for `keepwarm serve|reembed --ray`."""

from __future__ import annotations

import logging

import ray
from ray.exceptions import AuthenticationError

from keepwarm.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL = "local"  # `--ray` without an address: start a cluster on this machine
TOKEN_HINT = (
    "the cluster uses token authentication: set RAY_AUTH_MODE=token and give this process the "
    "cluster's token (RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), as for any Ray driver"
)


def join(address: str) -> None:
    """Join the cluster at `address` (`host:port` of its head) or start a local one (`local`).

    Raises ConfigError naming the cluster and the likely fix when it cannot be joined: Ray's
    own error is a traceback whose cause (a refused token) sits two exceptions deep.
    """
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, AuthenticationError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {_reason(exc)}") from None
    resources = ray.cluster_resources()
    log.info(
        "joined Ray cluster (%s): %d node(s), %g CPU(s), %g GPU(s)",
        "started here" if address == LOCAL else address,
        len([node for node in ray.nodes() if node["Alive"]]),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )


def _reason(error: BaseException) -> str:
    """Why joining failed: a refused token anywhere in the chain, else Ray's first line.

    Ray reports the refused token as an AuthenticationError or, from its connect loop, as a
    RuntimeError quoting that error's traceback.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, AuthenticationError) or "InvalidAuthToken" in str(cause):
            return TOKEN_HINT
        cause = cause.__cause__ or cause.__context__
    return str(error).splitlines()[0] if str(error) else type(error).__name__
