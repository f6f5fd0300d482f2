"""A model ready to serve: its spec, tokenizer, runtime, queue and worker thread.

`load_model` is the engine's default loader: it builds (or reuses) the artifacts, opens
and warms up the runtime and measures the call limits, then `start_model` puts a queue
and workers around the runtime. A loader of one's own (the Engine's `loader` seam, used
by tests with a runtime of known vectors) calls `start_model` with its runtime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.catalog.versions import short_version, version_label
from keepwarm.engine.background import BackgroundWorkers
from keepwarm.engine.colbert import ColbertTokenizer
from keepwarm.engine.pairs import PairOptions, PairTokenizer
from keepwarm.engine.scheduler import CallLimits, CallLimitSettings, Scheduler
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.engine.tuning import measured_limits
from keepwarm.engine.types import ModelInfo
from keepwarm.engine.work import ONLINE
from keepwarm.engine.worker import ModelWorker, pad_rows
from keepwarm.errors import ConfigError, NotReady
from keepwarm.metrics import Metrics
from keepwarm.runtimes.accuracy import Batch
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.factory import OpenedRuntime, open_runtime
from keepwarm.runtimes.probe import PROBE_TEXTS, calibration_texts

log = logging.getLogger(__name__)

# (rows, tokens) shapes run once after loading so the first request is not slow
_WARMUP_SHAPES = ((1, 8), (8, 64), (32, 16))
_PROBE_ROWS = 16  # texts per call when probing accuracy or calibrating
_PROBE_QUERIES = 3  # rerankers' probes: the first probe texts are short questions, used as queries


@dataclass
class ServedModel:
    """Everything needed to embed with one model; `info` is what callers are told about it."""

    spec: ModelSpec
    tokenizer: ModelTokenizer
    opened: OpenedRuntime
    scheduler: Scheduler
    worker: ModelWorker
    fingerprint: str
    info: ModelInfo
    load_seconds: float = 0.0
    background: BackgroundWorkers | None = None
    pairs: PairTokenizer | None = None  # rerankers, classifiers: how pairs of texts are tokenized
    colbert: ColbertTokenizer | None = None  # PyLate ColBERT models: how queries and documents are marked

    @property
    def runtime(self):  # noqa: ANN201 - keepwarm.runtimes.base.Runtime
        return self.opened.runtime

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def dimensions(self) -> int:
        return self.info.dimensions

    @property
    def short_version(self) -> str:
        return self.info.short_version

    @property
    def label(self) -> str:
        return self.info.label

    def close(self) -> None:
        """Stop taking work, fail what is still queued, and let the worker finish."""
        for item in self.scheduler.close():
            item.job.fail(NotReady("the model is being unloaded or the server is stopping", retry_after=1))
        self.worker.join(timeout=30)
        if self.background:
            self.background.join(timeout=30)


Loader = Callable[[ModelSpec, str, str, ArtifactStore, CallLimitSettings, Metrics], ServedModel]
"""(spec, fingerprint, version, artifact store, call limits, metrics) -> a started model."""


def padded_calls(tokenizer: ModelTokenizer, texts: list[str]) -> list[Batch]:
    """`texts` tokenized for this model (truncated to its limit), padded, in calls of a few rows.

    A reranker reads pairs: each text is a document, after one of the first (short) probe texts as its query.
    """
    spec = tokenizer.spec
    if spec.task == "rerank":
        pairs = PairTokenizer(spec)
        tokenized = [
            pairs.encode(PROBE_TEXTS[i % _PROBE_QUERIES], [document], PairOptions(overflow="truncate"))
            for i, document in enumerate(texts)
        ]
        rows = [t.ids[0] for t in tokenized]
        types = [t.type_ids[0] for t in tokenized] if spec.pairs else None
    else:
        rows, types = tokenizer.encode_texts(texts, overflow="truncate").ids, None
    calls = []
    for start in range(0, len(rows), _PROBE_ROWS):
        call = pad_rows(rows[start : start + _PROBE_ROWS], tokenizer.pad_id)
        if types is not None:
            call = (*call, pad_rows(types[start : start + _PROBE_ROWS], 0)[0])
        calls.append(call)
    return calls


def _retrieval_loss(tokenizer: ModelTokenizer, reference: Runtime, candidate: Runtime) -> dict[str, Any]:
    """What an int8 build loses in search (keepwarm.evaluation sits above the engine: imported on use)."""
    from keepwarm.evaluation.builds import runtime_loss

    return runtime_loss(tokenizer, reference, candidate)


def _warm_up(opened: OpenedRuntime, pad_id: int) -> None:
    for rows, tokens in _WARMUP_SHAPES:
        ids = np.full((rows, tokens), pad_id, dtype=np.int64)
        opened.runtime.embed(ids, np.ones_like(ids))


def _check_matryoshka(spec: ModelSpec, dimensions: int) -> None:
    too_big = [d for d in spec.matryoshka_dims if d > dimensions]
    if too_big:
        raise ConfigError(
            f"model '{spec.name}': key 'matryoshka_dims' has {too_big}, above the model's {dimensions}"
        )


def load_model(
    spec: ModelSpec,
    fingerprint: str,
    version: str,
    store: ArtifactStore,
    settings: CallLimitSettings,
    metrics: Metrics,
) -> ServedModel:
    """Build (or reuse) the model's artifacts, open its runtime, warm it up and start its worker."""
    started = time.perf_counter()
    tokenizer = ModelTokenizer(spec)
    probe = padded_calls(tokenizer, list(PROBE_TEXTS))
    calibration = partial(padded_calls, tokenizer, calibration_texts())
    opened = open_runtime(spec, store, fingerprint, probe, calibration, partial(_retrieval_loss, tokenizer))
    _check_matryoshka(spec, opened.runtime.dimensions)
    _warm_up(opened, tokenizer.pad_id)
    limits = measured_limits(
        settings, spec, fingerprint, opened.runtime, opened.dtype, store, tokenizer.pad_id
    )
    return start_model(spec, fingerprint, version, tokenizer, opened, limits, metrics, started=started)


def start_model(
    spec: ModelSpec,
    fingerprint: str,
    version: str,
    tokenizer: ModelTokenizer,
    opened: OpenedRuntime,
    limits: CallLimits,
    metrics: Metrics,
    *,
    started: float | None = None,
) -> ServedModel:
    """Put a queue and workers around an opened runtime, with the model's decided call limits."""
    started = time.perf_counter() if started is None else started
    label = version_label(spec.name, version)
    scheduler = Scheduler(limits, on_dropped=metrics.inputs_dropped.labels(label).inc)
    metrics.track_queue(label, lambda: scheduler.queued_tokens)
    observe = partial(metrics.observe_batch, label)  # metrics' name for a model call
    background = BackgroundWorkers.for_runtime(
        spec.name, opened.runtime, scheduler, tokenizer.pad_id, observe
    )
    online_only = (ONLINE,) if background else None  # else this worker serves background work too
    worker = ModelWorker(
        spec.name, opened.runtime, scheduler, tokenizer.pad_id, observe, priorities=online_only
    )
    worker.start()
    seconds = time.perf_counter() - started
    log.info(
        "model '%s@%s' loaded in %.2fs (%s %s, %d dims)",
        spec.name,
        short_version(version),
        seconds,
        opened.runtime.name,
        opened.dtype,
        opened.runtime.dimensions,
    )
    info = ModelInfo(
        name=spec.name,
        version=version,
        dimensions=opened.runtime.dimensions,
        runtime=opened.runtime.name,
        dtype=opened.dtype,
        max_call_tokens=limits.max_call_tokens,
        max_call_rows=limits.max_call_rows,
        max_padding_tokens=limits.max_padding_tokens,
        created=int((spec.directory / "config.json").stat().st_mtime),
        accuracy=dict(opened.accuracy),
        task=spec.task,
        token_multiple=limits.token_multiple,
    )
    return ServedModel(
        spec=spec,
        tokenizer=tokenizer,
        opened=opened,
        scheduler=scheduler,
        worker=worker,
        fingerprint=fingerprint,
        info=info,
        load_seconds=seconds,
        background=background,
        pairs=PairTokenizer(spec) if spec.task in ("rerank", "classify") else None,
        colbert=ColbertTokenizer(spec, tokenizer) if spec.colbert is not None else None,
    )
