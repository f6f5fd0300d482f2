"""The engine: embeds inputs with the served models, in-process, for any caller.

The HTTP API is one caller; benchmarks and batch jobs are others. `embed` (asyncio)
and `embed_sync` (threads) share one path: resolve the model version (loading it first
if it is lazy), tokenize, answer what the cache knows, queue the rest as a job (each
distinct input once), wait for the worker, then combine chunks and cut dimensions.

Each configured model version has its own queue and worker thread, so a burst on a
slow model never queues behind, or in front of, a fast one. `reconfigure` swaps in a
new catalog while requests keep flowing: versions that stay keep running, new ones
load before the swap, and removed ones close once their last request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keepwarm.catalog import ArtifactStore, DigestCache, ModelSpec, directory_fingerprint
from keepwarm.catalog.versions import matches, model_version, short_version, split_pin, version_label
from keepwarm.engine.cache import EmbeddingCache, cache_key
from keepwarm.engine.jobs import ONLINE, Job, WorkItem
from keepwarm.engine.model import ServedModel, load_model
from keepwarm.engine.scheduler import BatchLimits
from keepwarm.engine.tokenization import Tokenized
from keepwarm.errors import ConfigError, InvalidRequest, ModelNotFound, NotReady, VersionConflict
from keepwarm.metrics import Metrics
from keepwarm.runtimes.pooling import l2_normalize

log = logging.getLogger(__name__)

Inputs = Sequence[str] | Sequence[Sequence[int]]
# Called with a request's token count after tokenization, before it is queued; raises to refuse it.
Admission = Callable[[int], None]
_RETIRE_TIMEOUT = 300.0  # seconds a removed version may keep answering its last requests

# Requests up to this many characters (or token ids) are tokenized on the event loop:
# that takes tens of microseconds, less than the hand-off to a thread and back (measured
# ~0.2 ms for one short text). Larger requests go to the tokenizer threads, so the event
# loop keeps answering other requests meanwhile.
_INLINE_TOKENIZE_SIZE = 2048


@dataclass(frozen=True)
class EngineSettings:
    """Limits that apply to every model the engine serves."""

    batch: BatchLimits = BatchLimits()
    max_request_tokens: int = 300_000
    tokenizer_threads: int = 2
    cache_bytes: int = 256 * 1024 * 1024  # in-memory embedding cache; 0 turns the cache off
    persistent_cache: bool = False  # also keep cached vectors in <data dir>/cache.sqlite
    # seconds an online request may wait before reaching the model, else it is dropped (None: no limit)
    queue_timeout: float | None = 60.0


@dataclass(frozen=True)
class Timings:
    """Where one request's time went, in seconds (see engine.jobs.Job for the moments)."""

    tokenization: float = 0.0  # tokenizing and looking the inputs up in the cache
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
    expect_version: str | None = None  # the version the caller's index was built with (409 if not current)


@dataclass(frozen=True)
class Embeddings:
    """The answer to one embed call: vectors in input order, tokens embedded, cache savings."""

    vectors: np.ndarray
    tokens: int
    model: ServedModel
    cached_inputs: int = 0
    cached_tokens: int = 0
    timings: Timings = Timings()


class ModelView(NamedTuple):
    """One configured model version as callers see it."""

    spec: ModelSpec
    version: str
    model: ServedModel | None
    current: bool


class _Slot:
    """One configured model version: loaded or not, and how many requests are using it."""

    def __init__(self, spec: ModelSpec, fingerprint: str) -> None:
        self.spec = spec
        self.fingerprint = fingerprint
        self.version = model_version(spec, fingerprint)
        self.model: ServedModel | None = None
        self.loading: Future[ServedModel] | None = None
        self.in_flight = 0
        self.last_used = time.monotonic()

    @property
    def key(self) -> str:
        return f"{self.spec.name}@{self.version}"

    def view(self, current: bool) -> ModelView:
        return ModelView(self.spec, self.version, self.model, current)


@dataclass
class _Catalog:
    """Slots by key, the current version of each name, and every alias."""

    slots: dict[str, _Slot] = field(default_factory=dict)
    current: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class _Plan:
    """One request after tokenization and cache lookup: what is known, what to compute."""

    tokenized: Tokenized
    vectors: list[np.ndarray | None]
    pending: dict[bytes, list[int]]  # distinct inputs to compute -> their positions
    cached_inputs: int = 0
    cached_tokens: int = 0


class Engine:
    """Serves model versions; call `load()` (eager models) before embedding."""

    def __init__(
        self,
        specs: list[ModelSpec],
        data_dir: Path,
        settings: EngineSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.data_dir = data_dir
        self.metrics = metrics or Metrics()
        self._lock = threading.Lock()
        self._store = ArtifactStore(data_dir)
        self._digests = DigestCache(data_dir / "digests.json")
        self._catalog = self._build_catalog(specs, {})
        self._loader = ThreadPoolExecutor(1, "keepwarm-load")
        self._tokenize_pool = ThreadPoolExecutor(self.settings.tokenizer_threads, "keepwarm-tokenize")
        cache_path = data_dir / "cache.sqlite" if self.settings.persistent_cache else None
        self.cache = EmbeddingCache(self.settings.cache_bytes, cache_path) if self.settings.cache_bytes else None
        self._stopping = threading.Event()
        self._idle_watcher: threading.Thread | None = None
        self._loading_eagerly = False
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once every eagerly loaded model is loaded and warmed up."""
        return self._ready

    @property
    def specs(self) -> list[ModelSpec]:
        return [slot.spec for slot in self._catalog.slots.values()]

    @property
    def models(self) -> list[ServedModel]:
        """The model versions loaded right now."""
        return [slot.model for slot in self._catalog.slots.values() if slot.model is not None]

    def catalog(self) -> list[ModelView]:
        """Every configured model version, marking the current one of each name."""
        catalog = self._catalog
        return [slot.view(catalog.current[slot.spec.name] == key) for key, slot in catalog.slots.items()]

    def spec_for(self, model: str) -> ModelSpec:
        """The spec `model` (a name, alias or pin) resolves to now: a cheap check before embedding."""
        return self._resolve(model).spec

    def describe(self, model: str) -> tuple[ModelView, list[ModelView]]:
        """The version `model` (a name, alias or pin) resolves to, and all versions of that name."""
        slot = self._resolve(model)
        versions = [view for view in self.catalog() if view.spec.name == slot.spec.name]
        return next(v for v in versions if v.version == slot.version), versions

    def load(self) -> None:
        """Load every eager model version (exporting artifacts the first time); blocking.

        Without `load()`, every model loads on first use (handy for scripts); with it,
        requests for an eager model that is still loading get a retryable 503.
        """
        self._loading_eagerly = True
        self._load_eager(self._catalog)
        self._ready = True
        self._watch_idle_models()

    def reconfigure(self, specs: list[ModelSpec]) -> None:
        """Serve `specs` from now on without dropping a request (see the module docs)."""
        new = self._build_catalog(specs, self._catalog.slots)
        self._load_eager(new)
        with self._lock:
            old, self._catalog = self._catalog, new
        retired = [slot for key, slot in old.slots.items() if key not in new.slots]
        summary = ", ".join(version_label(name, new.slots[key].version) for name, key in new.current.items())
        log.info("catalog reloaded: serving %s; retiring %d version(s)", summary, len(retired))
        self._watch_idle_models()
        for slot in retired:
            self._retire(slot)

    def close(self) -> None:
        """Stop every model's worker, failing queued work with a retryable error."""
        self._ready = False
        self._stopping.set()
        for model in self.models:
            model.close()
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self.cache is not None:
            self.cache.close()

    def resolve(self, model: str) -> ServedModel:
        """The loaded model for a name, alias or pin: ModelNotFound, or NotReady if not loaded."""
        slot = self._resolve(model)
        if slot.model is None:
            raise NotReady(f"model '{model}' is not loaded yet", retry_after=2)
        return slot.model

    async def embed(
        self, model: str, inputs: Inputs, options: EmbedOptions = EmbedOptions(), *, admit: Admission | None = None
    ) -> Embeddings:
        """Embed `inputs` (texts, or token-id lists) with `model`; cancel-safe.

        `admit`, if given, sees the request's token count before anything is queued and
        may refuse the request by raising (the HTTP layer's tokens-per-minute limit).
        """
        with self._acquire(model, options.expect_version) as slot:
            served = slot.model or await asyncio.wrap_future(self._load_on_demand(slot))
            _check_options(served, options)
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            if _size(inputs) <= _INLINE_TOKENIZE_SIZE:  # a thread hand-off costs more than this much work
                plan = self._plan(served, inputs, options)
            else:
                plan = await loop.run_in_executor(self._tokenize_pool, self._plan, served, inputs, options)
            tokenization = time.perf_counter() - started
            job = self._submit(served, plan, options.priority, admit)
            try:
                await asyncio.wrap_future(job.future)
            except asyncio.CancelledError:
                served.scheduler.discard_finished()
                raise
            return self._finish(served, plan, job, options.dimensions, tokenization)

    def embed_sync(
        self, model: str, inputs: Inputs, options: EmbedOptions = EmbedOptions(), *, admit: Admission | None = None
    ) -> Embeddings:
        """Blocking version of `embed`, for scripts, benchmarks and worker threads."""
        with self._acquire(model, options.expect_version) as slot:
            served = slot.model or self._load_on_demand(slot).result()
            _check_options(served, options)
            started = time.perf_counter()
            plan = self._plan(served, inputs, options)
            tokenization = time.perf_counter() - started
            job = self._submit(served, plan, options.priority, admit)
            job.future.result()
            return self._finish(served, plan, job, options.dimensions, tokenization)

    # -- the catalog ---------------------------------------------------------------------

    def _build_catalog(self, specs: list[ModelSpec], existing: dict[str, _Slot]) -> _Catalog:
        catalog = _Catalog()
        for spec in specs:
            slot = _Slot(spec, directory_fingerprint(spec.directory, self._digests))
            if slot.key in catalog.slots:
                raise ConfigError(f"model '{spec.name}' lists the same version twice ({short_version(slot.version)})")
            catalog.slots[slot.key] = existing.get(slot.key, slot)
            if spec.current:
                catalog.current[spec.name] = slot.key
                catalog.names.update({alias: spec.name for alias in spec.names})
        return catalog

    def _resolve(self, model: str) -> _Slot:
        catalog = self._catalog
        name, pin = split_pin(model)
        canonical = catalog.names.get(name)
        if canonical is None:
            raise ModelNotFound(model, list(catalog.names))
        if pin is None:
            return catalog.slots[catalog.current[canonical]]
        for slot in catalog.slots.values():
            if slot.spec.name == canonical and matches(slot.version, pin):
                return slot
        served = [short_version(s.version) for s in catalog.slots.values() if s.spec.name == canonical]
        raise ModelNotFound(model, list(catalog.names), f" (versions of '{canonical}' served here: {', '.join(served)})")

    @contextlib.contextmanager
    def _acquire(self, model: str, expect_version: str | None) -> Iterator[_Slot]:
        """Resolve and mark in use in one step, so a reload can never close it in between."""
        with self._lock:
            slot = self._resolve(model)
            if expect_version is not None:
                _check_expected_version(model, slot, expect_version, self._catalog)
            slot.in_flight += 1
        try:
            yield slot
        finally:
            with self._lock:
                slot.in_flight -= 1
                slot.last_used = time.monotonic()

    # -- loading and unloading -----------------------------------------------------------

    def _load_eager(self, catalog: _Catalog) -> None:
        for slot in catalog.slots.values():
            if slot.spec.load == "eager":
                self._load(slot).result()

    def _load_on_demand(self, slot: _Slot) -> Future[ServedModel]:
        if slot.spec.load == "eager" and self._loading_eagerly and not self._ready:
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
            model = load_model(
                slot.spec, slot.fingerprint, slot.version, self._store, self.settings.batch, self.metrics
            )
        except Exception as exc:
            with self._lock:
                slot.loading = None
            if slot.spec.load == "lazy":
                log.error("could not load model '%s': %s", slot.spec.name, exc, exc_info=exc)
                raise NotReady(f"model '{slot.spec.name}' failed to load; see the server log", retry_after=5) from exc
            raise
        with self._lock:
            slot.model, slot.loading, slot.last_used = model, None, time.monotonic()
        self.metrics.track_model(model.label, model.load_seconds, lambda: model.scheduler.tokens_per_second)
        return model

    def _retire(self, slot: _Slot) -> None:
        """Close a removed version once its in-flight requests are answered."""
        deadline = time.monotonic() + _RETIRE_TIMEOUT
        while slot.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            model, slot.model = slot.model, None
        if model is not None:
            model.close()

    def _watch_idle_models(self) -> None:
        lazy = any(s.spec.load == "lazy" and s.spec.idle_timeout for s in self._catalog.slots.values())
        if lazy and self._idle_watcher is None:
            self._idle_watcher = threading.Thread(target=self._unload_idle_models, name="keepwarm-idle", daemon=True)
            self._idle_watcher.start()

    def _unload_idle_models(self) -> None:
        while not self._stopping.wait(0.25):
            for slot in list(self._catalog.slots.values()):
                timeout = slot.spec.idle_timeout
                if slot.spec.load != "lazy" or not timeout:
                    continue
                with self._lock:
                    idle = time.monotonic() - slot.last_used > timeout
                    model = slot.model if idle and slot.in_flight == 0 else None
                    if model is not None:
                        slot.model = None
                if model is not None:
                    model.close()
                    log.info("unloaded model '%s' after %.0fs idle", slot.spec.name, timeout)

    # -- one request -----------------------------------------------------------------------

    def _plan(self, served: ServedModel, inputs: Inputs, options: EmbedOptions) -> _Plan:
        """Tokenize, then answer from the cache and collapse repeated inputs (off the event loop)."""
        if not inputs:
            raise InvalidRequest("input must not be empty", param="input")
        overflow = served.spec.overflow if options.truncate is None else ("truncate" if options.truncate else "error")
        tokenized = served.tokenizer.encode(inputs, overflow=overflow, prompt_name=options.prompt_name)
        if tokenized.tokens > self.settings.max_request_tokens:
            raise InvalidRequest(
                f"This request has {tokenized.tokens} tokens; the maximum per request is "
                f"{self.settings.max_request_tokens}. Split it into smaller requests.",
                param="input",
                code="max_tokens_per_request",
            )
        keys = [cache_key(served.version, ids) for ids in tokenized.ids]
        found = self.cache.get_many(keys) if self.cache else [None] * len(keys)
        plan = _Plan(tokenized, found, {})
        for position, (key, vector) in enumerate(zip(keys, found, strict=True)):
            if vector is not None:
                plan.cached_inputs += 1
                plan.cached_tokens += len(tokenized.ids[position])
            else:
                plan.pending.setdefault(key, []).append(position)
        self.metrics.cache_lookups.labels("hit").inc(plan.cached_inputs)
        self.metrics.cache_lookups.labels("miss").inc(len(keys) - plan.cached_inputs)
        return plan

    def _submit(self, served: ServedModel, plan: _Plan, priority: int, admit: Admission | None) -> Job:
        if admit is not None:
            admit(plan.tokenized.tokens)
        if priority != ONLINE and served.background:
            served.background.start()
        timeout = self.settings.queue_timeout if priority == ONLINE else None
        job = Job(len(plan.pending), served.dimensions, priority=priority, queue_timeout=timeout)
        ids = plan.tokenized.ids
        items = [WorkItem(ids=ids[positions[0]], job=job, index=n) for n, positions in enumerate(plan.pending.values())]
        if items:
            served.scheduler.submit(items)
        else:
            job.future.set_result(job.vectors)
        return job

    def _finish(
        self, served: ServedModel, plan: _Plan, job: Job, dimensions: int | None, tokenization: float
    ) -> Embeddings:
        computed = job.vectors
        vectors = np.empty((len(plan.vectors), served.dimensions), dtype=np.float32)
        for position, vector in enumerate(plan.vectors):
            if vector is not None:
                vectors[position] = vector
        for row, positions in enumerate(plan.pending.values()):
            vectors[positions] = computed[row]
        if self.cache is not None and plan.pending:
            self.cache.put_many([(key, computed[row]) for row, key in enumerate(plan.pending)])
        repeated = sum(len(p) - 1 for p in plan.pending.values())
        saved_tokens = plan.cached_tokens + sum(
            len(plan.tokenized.ids[p[0]]) * (len(p) - 1) for p in plan.pending.values()
        )
        if plan.tokenized.owners is not None:
            vectors = _combine_chunks(vectors, plan.tokenized, normalize=served.spec.normalize)
        if dimensions is not None and dimensions != served.dimensions:
            vectors = l2_normalize(vectors[:, :dimensions])
        timings = _timings(job, tokenization)
        return Embeddings(vectors, plan.tokenized.tokens, served, plan.cached_inputs + repeated, saved_tokens, timings)


def _timings(job: Job, tokenization: float) -> Timings:
    started = job.started if job.started is not None else job.submitted
    return Timings(
        tokenization=tokenization,
        queue=started - job.submitted,
        inference=(job.completed or started) - started,
        compute=job.compute_seconds,
    )


def _size(inputs: Inputs) -> int:
    """Characters (or token ids) in a request: a cheap measure of its tokenization work."""
    return sum(len(item) for item in inputs)


def _check_expected_version(model: str, slot: _Slot, expected: str, catalog: _Catalog) -> None:
    if matches(slot.version, expected.lower()):
        return
    name = slot.spec.name
    current = short_version(slot.version)
    still_served = any(s.spec.name == name and matches(s.version, expected.lower()) for s in catalog.slots.values())
    advice = (
        f"pin model '{name}@{expected}' to keep using it while you re-embed your index"
        if still_served
        else f"version {expected} is no longer served, so vectors in your index must be re-embedded"
    )
    raise VersionConflict(
        f"'{model}' now resolves to version {current}, not the {expected} your request expects: {advice}.",
        param="model",
    )


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


def _combine_chunks(vectors: np.ndarray, tokenized: Tokenized, *, normalize: bool) -> np.ndarray:
    """Token-weighted mean of each input's window vectors (renormalised for normalising models)."""
    owners = np.asarray(tokenized.owners)
    weights = np.array([len(ids) for ids in tokenized.ids], dtype=np.float64)
    count = int(owners.max()) + 1
    summed = np.zeros((count, vectors.shape[1]), dtype=np.float64)
    np.add.at(summed, owners, vectors * weights[:, None])
    combined = (summed / np.bincount(owners, weights=weights)[:, None]).astype(np.float32)
    return l2_normalize(combined) if normalize else combined
