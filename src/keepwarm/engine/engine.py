"""The engine: embeds inputs with the served models, in-process, for any caller.

The HTTP API is one caller; benchmarks and batch jobs are others. `embed` (asyncio)
and `embed_sync` (threads) share one path: resolve the model (loading it first if it is
lazy), tokenize, queue as a job, wait for the worker to fill it, then combine chunks and
cut to the requested dimensions.

Each model has its own queue and worker thread, so a burst on a slow model never
queues behind, or in front of, a fast one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keepwarm.catalog import ArtifactStore, DigestCache, ModelSpec
from keepwarm.engine.jobs import ONLINE, Job, WorkItem
from keepwarm.engine.model import ServedModel, load_model
from keepwarm.engine.scheduler import BatchLimits
from keepwarm.engine.tokenization import Tokenized
from keepwarm.errors import InvalidRequest, ModelNotFound, NotReady
from keepwarm.metrics import Metrics
from keepwarm.runtimes.pooling import l2_normalize

log = logging.getLogger(__name__)

Inputs = Sequence[str] | Sequence[Sequence[int]]
# Called with a request's token count after tokenization, before it is queued; raises to refuse it.
Admission = Callable[[int], None]


@dataclass(frozen=True)
class EngineSettings:
    """Limits that apply to every model the engine serves."""

    batch: BatchLimits = BatchLimits()
    max_request_tokens: int = 300_000
    tokenizer_threads: int = 2
    # online requests that waited longer than this before reaching the model are dropped
    queue_timeout: float | None = None


@dataclass(frozen=True)
class Timings:
    """Where one request's time went, in seconds (see engine.jobs.Job for the moments)."""

    tokenization: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    compute: float = 0.0  # this request's share of model time (per-hour pricing)


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: what the caller may choose per request."""

    truncate: bool | None = None  # None: the model's overflow policy; True: truncate; False: refuse
    dimensions: int | None = None
    prompt_name: str | None = None
    priority: int = ONLINE


@dataclass(frozen=True)
class Embeddings:
    """The answer to one embed call: vectors in input order and the tokens they cost."""

    vectors: np.ndarray
    tokens: int
    model: ServedModel
    timings: Timings = Timings()
    cache_hits: int = 0


class _Slot:
    """One configured model: loaded or not, and how many requests are using it."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model: ServedModel | None = None
        self.loading: Future[ServedModel] | None = None
        self.in_flight = 0
        self.last_used = time.monotonic()


class Engine:
    """Serves one or more models; call `load()` (eager models) before embedding."""

    def __init__(
        self,
        specs: list[ModelSpec],
        data_dir: Path,
        settings: EngineSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.specs = specs
        self.settings = settings or EngineSettings()
        self.data_dir = data_dir
        self.metrics = metrics or Metrics()
        self._slots = {spec.name: _Slot(spec) for spec in specs}
        self._names = {alias: spec.name for spec in specs for alias in spec.names}
        self._lock = threading.Lock()
        self._loader = ThreadPoolExecutor(1, "keepwarm-load")
        self._tokenize_pool = ThreadPoolExecutor(self.settings.tokenizer_threads, "keepwarm-tokenize")
        self._store = ArtifactStore(data_dir)
        self._digests = DigestCache(data_dir / "digests.json")
        self._stopping = threading.Event()
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once every eagerly loaded model is loaded and warmed up."""
        return self._ready

    @property
    def models(self) -> list[ServedModel]:
        """The models loaded right now."""
        return [slot.model for slot in self._slots.values() if slot.model is not None]

    def catalog(self) -> list[tuple[ModelSpec, ServedModel | None]]:
        """Every configured model, with its loaded form where it is loaded."""
        return [(slot.spec, slot.model) for slot in self._slots.values()]

    def load(self) -> None:
        """Load every eager model (exporting artifacts the first time); blocking."""
        for slot in self._slots.values():
            if slot.spec.load == "eager":
                self._load(slot).result()
        self._ready = True
        if any(s.spec.load == "lazy" and s.spec.idle_timeout for s in self._slots.values()):
            threading.Thread(target=self._unload_idle_models, name="keepwarm-idle", daemon=True).start()

    def close(self) -> None:
        """Stop every model's worker, failing queued work with a retryable error."""
        self._ready = False
        self._stopping.set()
        for model in self.models:
            model.close()
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def entry(self, name: str) -> tuple[ModelSpec, ServedModel | None]:
        """The spec for a name or alias and its loaded form (None if not loaded); ModelNotFound."""
        slot = self._slot(name)
        return slot.spec, slot.model

    def resolve(self, name: str) -> ServedModel:
        """The loaded model for a name or alias: ModelNotFound, or NotReady if not loaded."""
        slot = self._slot(name)
        if slot.model is None:
            raise NotReady(f"model '{name}' is not loaded yet", retry_after=2)
        return slot.model

    async def embed(
        self, model: str, inputs: Inputs, options: EmbedOptions = EmbedOptions(), *, admit: Admission | None = None
    ) -> Embeddings:
        """Embed `inputs` (texts, or token-id lists) with `model`; cancel-safe.

        `admit`, if given, sees the request's token count before it is queued and may
        refuse it by raising (the HTTP layer's tokens-per-minute limit).
        """
        slot = self._slot(model)
        with self._in_use(slot):
            served = slot.model or await asyncio.wrap_future(self._load_on_demand(slot))
            _check_options(served, options)
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            tokenized = await loop.run_in_executor(self._tokenize_pool, _tokenize, served, inputs, options)
            tokenization = time.perf_counter() - started
            job = self._submit(served, tokenized, options.priority, admit)
            try:
                await asyncio.wrap_future(job.future)
            except asyncio.CancelledError:
                served.scheduler.discard_finished()
                raise
            return _finish(served, job, tokenized, options.dimensions, tokenization)

    def embed_sync(
        self, model: str, inputs: Inputs, options: EmbedOptions = EmbedOptions(), *, admit: Admission | None = None
    ) -> Embeddings:
        """Blocking version of `embed`, for scripts, benchmarks and worker threads."""
        slot = self._slot(model)
        with self._in_use(slot):
            served = slot.model or self._load_on_demand(slot).result()
            _check_options(served, options)
            started = time.perf_counter()
            tokenized = _tokenize(served, inputs, options)
            tokenization = time.perf_counter() - started
            job = self._submit(served, tokenized, options.priority, admit)
            job.future.result()
            return _finish(served, job, tokenized, options.dimensions, tokenization)

    def _slot(self, name: str) -> _Slot:
        canonical = self._names.get(name)
        if canonical is None:
            raise ModelNotFound(name, list(self._names))
        return self._slots[canonical]

    @contextlib.contextmanager
    def _in_use(self, slot: _Slot) -> Iterator[None]:
        """Keep the model from being unloaded while a request uses it."""
        with self._lock:
            slot.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                slot.in_flight -= 1
                slot.last_used = time.monotonic()

    def _load_on_demand(self, slot: _Slot) -> Future[ServedModel]:
        if slot.spec.load == "eager" and not self._ready:
            raise NotReady(f"model '{slot.spec.name}' is still loading", retry_after=2)
        return self._load(slot)

    def _load(self, slot: _Slot) -> Future[ServedModel]:
        """Start loading (once, however many callers ask) and return the pending result."""
        with self._lock:
            if slot.model is not None:
                done: Future[ServedModel] = Future()
                done.set_result(slot.model)
                return done
            if slot.loading is None:
                slot.loading = self._loader.submit(self._load_now, slot)
            return slot.loading

    def _load_now(self, slot: _Slot) -> ServedModel:
        try:
            model = load_model(slot.spec, self._store, self._digests, self.settings.batch, self.metrics)
        except Exception as exc:
            with self._lock:
                slot.loading = None
            if slot.spec.load == "lazy":
                log.error("could not load model '%s': %s", slot.spec.name, exc, exc_info=exc)
                raise NotReady(f"model '{slot.spec.name}' failed to load; see the server log", retry_after=5) from exc
            raise
        with self._lock:
            slot.model, slot.loading, slot.last_used = model, None, time.monotonic()
        self.metrics.track_model(slot.spec.name, model.load_seconds, lambda: model.scheduler.tokens_per_second)
        return model

    def _unload_idle_models(self) -> None:
        lazy = [s for s in self._slots.values() if s.spec.load == "lazy" and s.spec.idle_timeout]
        interval = max(0.05, min(s.spec.idle_timeout for s in lazy) / 4)
        while not self._stopping.wait(interval):
            for slot in lazy:
                with self._lock:
                    idle = time.monotonic() - slot.last_used > slot.spec.idle_timeout
                    model = slot.model if idle and slot.in_flight == 0 else None
                    if model is not None:
                        slot.model = None
                if model is not None:
                    model.close()
                    log.info("unloaded model '%s' after %.0fs idle", slot.spec.name, slot.spec.idle_timeout)

    def _submit(self, served: ServedModel, tokenized: Tokenized, priority: int, admit: Admission | None) -> Job:
        if tokenized.tokens > self.settings.max_request_tokens:
            raise InvalidRequest(
                f"This request has {tokenized.tokens} tokens; the maximum per request is "
                f"{self.settings.max_request_tokens}. Split it into smaller requests.",
                param="input",
                code="max_tokens_per_request",
            )
        if admit is not None:
            admit(tokenized.tokens)
        timeout = self.settings.queue_timeout if priority == ONLINE else None
        job = Job(len(tokenized.ids), served.dimensions, priority=priority, queue_timeout=timeout)
        served.scheduler.submit([WorkItem(ids=ids, job=job, index=n) for n, ids in enumerate(tokenized.ids)])
        return job


def _tokenize(served: ServedModel, inputs: Inputs, options: EmbedOptions) -> Tokenized:
    if not inputs:
        raise InvalidRequest("input must not be empty", param="input")
    overflow = served.spec.overflow if options.truncate is None else ("truncate" if options.truncate else "error")
    return served.tokenizer.encode(inputs, overflow=overflow, prompt_name=options.prompt_name)


def _check_options(served: ServedModel, options: EmbedOptions) -> None:
    spec, dimensions = served.spec, options.dimensions
    if dimensions is not None:
        if spec.matryoshka_dims and dimensions not in (*spec.matryoshka_dims, served.dimensions):
            raise InvalidRequest(
                f"dimensions must be one of {[*spec.matryoshka_dims, served.dimensions]} for model "
                f"'{spec.name}' (its Matryoshka sizes), got {dimensions}",
                param="dimensions",
            )
        if not 1 <= dimensions <= served.dimensions:
            raise InvalidRequest(
                f"dimensions must be between 1 and {served.dimensions} for model '{spec.name}', got {dimensions}",
                param="dimensions",
            )
    if options.prompt_name is not None and options.prompt_name not in spec.prompts:
        allowed = ", ".join(sorted(spec.prompts)) or "none (this model has no prompts)"
        raise InvalidRequest(
            f"model '{spec.name}' has no prompt '{options.prompt_name}'; allowed values: {allowed}",
            param="input_type",
        )


def _finish(
    served: ServedModel, job: Job, tokenized: Tokenized, dimensions: int | None, tokenization: float
) -> Embeddings:
    vectors = job.vectors
    if tokenized.owners is not None:
        vectors = _combine_chunks(vectors, tokenized, normalize=served.spec.normalize)
    if dimensions is not None and dimensions != served.dimensions:
        vectors = l2_normalize(vectors[:, :dimensions])
    return Embeddings(vectors=vectors, tokens=tokenized.tokens, model=served, timings=_timings(job, tokenization))


def _timings(job: Job, tokenization: float) -> Timings:
    started = job.started if job.started is not None else job.submitted
    return Timings(
        tokenization=tokenization,
        queue=started - job.submitted,
        inference=(job.completed or started) - started,
        compute=job.compute_seconds,
    )


def _combine_chunks(vectors: np.ndarray, tokenized: Tokenized, *, normalize: bool) -> np.ndarray:
    """Token-weighted mean of each input's window vectors (renormalised for normalising models)."""
    owners = np.asarray(tokenized.owners)
    weights = np.array([len(ids) for ids in tokenized.ids], dtype=np.float64)
    count = int(owners.max()) + 1
    summed = np.zeros((count, vectors.shape[1]), dtype=np.float64)
    np.add.at(summed, owners, vectors * weights[:, None])
    combined = (summed / np.bincount(owners, weights=weights)[:, None]).astype(np.float32)
    return l2_normalize(combined) if normalize else combined
