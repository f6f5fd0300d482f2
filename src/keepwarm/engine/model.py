"""A model ready to serve: its spec, tokenizer, runtime, queue and worker thread."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore, DigestCache, ModelSpec, directory_fingerprint
from keepwarm.catalog.versions import model_version, short_version
from keepwarm.engine.background import BackgroundWorkers
from keepwarm.engine.jobs import ONLINE
from keepwarm.engine.scheduler import BatchLimits, Scheduler
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.engine.worker import ModelWorker
from keepwarm.errors import NotReady
from keepwarm.metrics import Metrics
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.export import export_key, export_onnx

log = logging.getLogger(__name__)

# (rows, tokens) shapes run once after loading so the first request is not slow
_WARMUP_SHAPES = ((1, 8), (8, 64), (32, 16))


@dataclass
class ServedModel:
    """Everything needed to embed with one model, and what it is known by."""

    spec: ModelSpec
    tokenizer: ModelTokenizer
    runtime: Runtime
    scheduler: Scheduler
    worker: ModelWorker
    fingerprint: str
    artifact: dict[str, Any] = field(default_factory=dict)
    created: int = 0
    load_seconds: float = 0.0
    background: BackgroundWorkers | None = None

    @property
    def dimensions(self) -> int:
        return self.runtime.dimensions

    @property
    def version(self) -> str:
        """Full version of the vectors this model produces (see catalog.versions)."""
        return model_version(self.spec, self.fingerprint)

    @property
    def short_version(self) -> str:
        return short_version(self.version)

    def close(self) -> None:
        """Stop taking work, fail what is still queued, and let the worker finish."""
        for item in self.scheduler.close():
            item.job.fail(NotReady("the server is shutting down", retry_after=1))
        self.worker.join(timeout=30)
        if self.background:
            self.background.join(timeout=30)


def _warm_up(runtime: Runtime, pad_id: int) -> None:
    for rows, tokens in _WARMUP_SHAPES:
        ids = np.full((rows, tokens), pad_id, dtype=np.int64)
        runtime.embed(ids, np.ones_like(ids))


def load_model(
    spec: ModelSpec,
    store: ArtifactStore,
    digests: DigestCache,
    limits: BatchLimits,
    metrics: Metrics,
) -> ServedModel:
    """Build (or reuse) the model's ONNX artifact, load it, warm it up and start its worker."""
    from keepwarm.runtimes.ort import OnnxRuntime, available_cores

    started = time.perf_counter()
    fingerprint = directory_fingerprint(spec.directory, digests)
    key = export_key(spec, fingerprint)
    folder, artifact = store.get(key) or store.build(key, partial(export_onnx, spec))
    runtime = OnnxRuntime(spec, folder / artifact["file"])
    tokenizer = ModelTokenizer(spec)
    _warm_up(runtime, tokenizer.pad_id)
    scheduler = Scheduler(limits, on_dropped=metrics.inputs_dropped.labels(spec.name).inc)
    metrics.track_queue(spec.name, lambda: scheduler.queued_tokens)
    observe = partial(metrics.observe_batch, spec.name)
    worker = ModelWorker(spec.name, runtime, scheduler, tokenizer.pad_id, observe, priorities=(ONLINE,))
    worker.start()
    background = BackgroundWorkers(spec, folder / artifact["file"], scheduler, tokenizer.pad_id, observe, available_cores)
    seconds = time.perf_counter() - started
    log.info("model '%s' loaded in %.2fs (%s, %d dims)", spec.name, seconds, runtime.name, runtime.dimensions)
    return ServedModel(
        spec=spec,
        tokenizer=tokenizer,
        runtime=runtime,
        scheduler=scheduler,
        worker=worker,
        fingerprint=fingerprint,
        artifact=artifact,
        created=int((spec.directory / "config.json").stat().st_mtime),
        load_seconds=seconds,
        background=background,
    )
