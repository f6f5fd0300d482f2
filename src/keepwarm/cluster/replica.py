"""One replica of one model version: an in-process Engine serving exactly that version.

Ray Serve runs this class as every replica of a version's deployment. The engine inside
tokenizes, caches, batches and calls the runtime exactly as in one process; the replica
only adapts it to Serve: errors come back as values (cluster/failures.py), and Serve's
health check asks the engine, and the engine's metrics go to the ingresses' /metrics
(cluster/metrics.py). Scaling (more replicas, none while idle) is Serve's job, so a lazy
model loads when its replica starts, not on its first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from keepwarm.catalog import ModelSpec
from keepwarm.cluster.failures import Failure
from keepwarm.cluster.metrics import Reporter
from keepwarm.engine import Engine, EngineSettings, ModelInfo
from keepwarm.errors import KeepwarmError, NotReady
from keepwarm.logs import configure_logging

# what the ingress may ask a replica's engine (cluster/engine.py forwards each)
ENGINE_CALLS = frozenset({"embed", "rerank", "classify", "tokenize", "decode"})


class ModelReplica:
    """Serves `spec` (one version) through an Engine of its own; see the module docs."""

    def __init__(self, spec: ModelSpec, data_dir: Path, settings: EngineSettings, log_level: str) -> None:
        configure_logging(log_level, "text")  # Ray forwards what a replica logs to the ingress's log
        self._engine = Engine([spec], data_dir, settings)  # spec: as deployment.replica_spec made it
        self._engine.load()
        self._reporter = Reporter(self._engine.metrics.registry, serve.get_replica_context().replica_tag)

    async def call(self, method: str, model: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        """The engine's answer to `method` (embed, rerank, classify, tokenize, decode) for `model`
        (the pinned version), or the error it refused with."""
        if method not in ENGINE_CALLS:
            raise ValueError(f"a replica answers {sorted(ENGINE_CALLS)}, not {method!r}")
        try:
            return await getattr(self._engine, method)(model, *args, **kwargs)
        except KeepwarmError as error:
            return Failure.of(error)

    def info(self) -> ModelInfo:
        """The loaded version as responses name it (runtime, dtype, dimensions)."""
        return self._engine.models[0].info

    def check_health(self) -> None:
        """Serve's health check: a replica whose engine stopped is replaced."""
        if not self._engine.ready:
            raise NotReady("the replica's engine is not serving")

    def __del__(self) -> None:
        reporter = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.stop()
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()
