"""The version registry: which model versions are configured, what a name means, and their lifetimes.

Each configured version has a slot: loaded or not, and how many requests are using it.
A name or alias resolves to its current version, `name@version` to a pinned one. A
request `acquire`s its slot: resolved once, authorized on that exact version, and marked
in use in one step, so a reload can neither swap the version it was checked against nor
close it while it is being served.

`reconfigure` swaps in a new catalog while requests keep flowing: versions that stay keep
running, new ones load before the swap, and removed ones close once their last request is
answered. Eager versions load in `load()`; lazy ones on first use, and unload after their
idle timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from keepwarm.catalog import ArtifactStore, DigestCache, ModelSpec, directory_fingerprint
from keepwarm.catalog.versions import matches, model_version, short_version, split_pin, version_label
from keepwarm.engine.model import Loader, ServedModel
from keepwarm.engine.scheduler import CallLimitSettings
from keepwarm.engine.types import Authorization, ModelView
from keepwarm.errors import ConfigError, ModelNotFound, NotReady, VersionConflict
from keepwarm.metrics import Metrics

log = logging.getLogger(__name__)

_RETIRE_TIMEOUT = 300.0  # seconds a removed version may keep answering its last requests
_IDLE_CHECK_SECONDS = 0.25


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
        return ModelView(self.spec, self.version, current, self.model.info if self.model else None)


@dataclass
class _Catalog:
    """Slots by key, the current version of each name, and every alias."""

    slots: dict[str, _Slot] = field(default_factory=dict)
    current: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


class Registry:
    """The configured model versions and their lifetimes (see the module docs)."""

    def __init__(
        self,
        specs: list[ModelSpec],
        data_dir: Path,
        limits: CallLimitSettings,
        metrics: Metrics,
        loader: Loader,
    ) -> None:
        self._limits = limits
        self._metrics = metrics
        self._loader = loader
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # notified when a request lets go of a slot
        self._store = ArtifactStore(data_dir)
        self._digests = DigestCache(data_dir / "digests.json")
        self._catalog = self._build_catalog(specs, {})
        self._load_pool = ThreadPoolExecutor(1, "keepwarm-load")
        self._stopping = threading.Event()
        self._idle_watcher: threading.Thread | None = None
        self._loading_eagerly = False
        self.ready = False

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

    def describe(self, model: str) -> tuple[ModelView, list[ModelView]]:
        """The version `model` (a name, alias or pin) resolves to, and all versions of that name."""
        slot = self._resolve(model)
        versions = [view for view in self.catalog() if view.spec.name == slot.spec.name]
        return next(v for v in versions if v.version == slot.version), versions

    def resolve(self, model: str) -> ServedModel:
        """The loaded model for a name, alias or pin: ModelNotFound, or NotReady if not loaded."""
        slot = self._resolve(model)
        if slot.model is None:
            raise NotReady(f"model '{model}' is not loaded yet", retry_after=2)
        return slot.model

    def load(self) -> None:
        """Load every eager version (blocking); from now on an eager one still loading answers NotReady."""
        self._loading_eagerly = True
        self._load_eager(self._catalog)
        self.ready = True
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
        self.ready = False
        self._stopping.set()
        for model in self.models:
            model.close()
        self._load_pool.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def acquire(
        self, model: str, *, expect_version: str | None = None, authorize: Authorization | None = None
    ) -> Iterator[Future[ServedModel]]:
        """Resolve `model` once and hold that version while the caller uses it; yields it, loaded or loading.

        `authorize` sees the spec of exactly the version that will serve the request (and
        may refuse by raising) before `expect_version` is compared, so a key that may not use
        a model learns nothing about its versions.
        """
        with self._lock:
            slot = self._resolve(model)
            slot.in_flight += 1
        try:
            self._check_request(model, slot, expect_version, authorize)
            yield self._load_on_demand(slot)
        finally:
            with self._lock:
                slot.in_flight -= 1
                slot.last_used = time.monotonic()
                self._released.notify_all()

    def route(
        self, model: str, *, expect_version: str | None = None, authorize: Authorization | None = None
    ) -> ModelView:
        """The version `model` resolves to, checked as `acquire` checks it, without loading it.

        For a caller that serves the versions elsewhere (cluster/: one Ray Serve deployment each).
        """
        slot = self._resolve(model)
        self._check_request(model, slot, expect_version, authorize)
        return slot.view(self._catalog.current.get(slot.spec.name) == slot.key)

    def _check_request(
        self, model: str, slot: _Slot, expect_version: str | None, authorize: Authorization | None
    ) -> None:
        if authorize is not None:
            authorize(slot.spec)
        if expect_version is not None:
            _check_expected_version(model, slot, expect_version, self._catalog)

    # -- the catalog ---------------------------------------------------------------------

    def _build_catalog(self, specs: list[ModelSpec], existing: dict[str, _Slot]) -> _Catalog:
        catalog = _Catalog()
        for spec in specs:
            slot = _Slot(spec, directory_fingerprint(spec.directory, self._digests))
            if slot.key in catalog.slots:
                raise ConfigError(
                    f"model '{spec.name}' lists the same version twice ({short_version(slot.version)})"
                )
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
        raise ModelNotFound(
            model, list(catalog.names), f" (versions of '{canonical}' served here: {', '.join(served)})"
        )

    # -- loading and unloading -----------------------------------------------------------

    def _load_eager(self, catalog: _Catalog) -> None:
        for slot in catalog.slots.values():
            if slot.spec.load == "eager":
                self._load(slot).result()

    def _load_on_demand(self, slot: _Slot) -> Future[ServedModel]:
        if slot.model is None and slot.spec.load == "eager" and self._loading_eagerly and not self.ready:
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
                slot.loading = self._load_pool.submit(self._load_now, slot)
            return slot.loading

    def _load_now(self, slot: _Slot) -> ServedModel:
        spec = slot.spec
        try:
            model = self._loader(
                spec, slot.fingerprint, slot.version, self._store, self._limits, self._metrics
            )
        except Exception as exc:
            with self._lock:
                slot.loading = None
            if spec.load == "lazy":
                log.error("could not load model '%s': %s", spec.name, exc, exc_info=exc)
                raise NotReady(
                    f"model '{spec.name}' failed to load; see the server log", retry_after=5
                ) from exc
            raise
        with self._lock:
            slot.model, slot.loading, slot.last_used = model, None, time.monotonic()
        self._metrics.track_model(model.label, model.load_seconds, lambda: model.scheduler.tokens_per_second)
        return model

    def _retire(self, slot: _Slot) -> None:
        """Close a removed version once its in-flight requests are answered."""
        with self._released:
            self._released.wait_for(lambda: slot.in_flight == 0, timeout=_RETIRE_TIMEOUT)
            model, slot.model = slot.model, None
        if model is not None:
            model.close()

    def _watch_idle_models(self) -> None:
        lazy = any(s.spec.load == "lazy" and s.spec.idle_timeout for s in self._catalog.slots.values())
        if lazy and self._idle_watcher is None:
            self._idle_watcher = threading.Thread(
                target=self._unload_idle_models, name="keepwarm-idle", daemon=True
            )
            self._idle_watcher.start()

    def _unload_idle_models(self) -> None:
        while not self._stopping.wait(_IDLE_CHECK_SECONDS):
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


def _check_expected_version(model: str, slot: _Slot, expected: str, catalog: _Catalog) -> None:
    if matches(slot.version, expected.lower()):
        return
    name = slot.spec.name
    current = short_version(slot.version)
    still_served = any(
        s.spec.name == name and matches(s.version, expected.lower()) for s in catalog.slots.values()
    )
    advice = (
        f"pin model '{name}@{expected}' to keep using it while you re-embed your index"
        if still_served
        else f"version {expected} is no longer served, so vectors in your index must be re-embedded"
    )
    raise VersionConflict(
        f"'{model}' now resolves to version {current}, not the {expected} your request expects: {advice}.",
        param="model",
    )
