"""The engine the ingress serves on a Ray cluster: the catalog here, the vectors in Ray Serve.

`ClusterEngine` answers what the HTTP app asks an `Engine` (catalog, describe, embed,
rerank, classify, tokenize, decode),
so `create_app`, the Batch API and the dashboard run unchanged on top of it. It resolves
a name, alias or pin with the same version registry as one process, checks the caller's
permission and expected version on that exact version, and sends the call to that
version's deployment as a pin, so a reload between resolving and answering cannot
change which vectors come back.

A replica that dies while answering (its process killed, its node lost) fails the calls
it held with a Ray actor error; embedding is idempotent, so they are sent again, and
Serve's router sends them to a live replica. Only when no replica answers for
`RETRY_SECONDS` does the client see a retryable 503.

Tokens-per-minute limits are checked when the answer comes back (the token count is
known only after the replica tokenized): an over-limit request is refused the same 429,
after its vectors were computed rather than before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from keepwarm.catalog import ModelSpec
from keepwarm.catalog.versions import version_label
from keepwarm.cluster.deployment import deploy, digest, running, undeploy
from keepwarm.cluster.failures import Failure
from keepwarm.cluster.metrics import ClusterRegistry
from keepwarm.engine import (
    Classifications,
    Embeddings,
    EmbedOptions,
    EngineSettings,
    ModelInfo,
    ModelView,
    ScoreOptions,
    Scores,
)
from keepwarm.engine.model import load_model
from keepwarm.engine.registry import Registry
from keepwarm.engine.scoring import ClassifyInput
from keepwarm.engine.tokenization import Token
from keepwarm.engine.types import Admission, Authorization, Inputs
from keepwarm.errors import NotReady, Overloaded
from keepwarm.metrics import Metrics

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # how long a call keeps being re-sent while its deployment has no live replica
_RETRY_PAUSE = 0.1
_RETIRE_TIMEOUT = 300.0  # seconds a removed version may keep answering its last requests
_DEFAULT_OPTIONS = EmbedOptions()
_DEFAULT_SCORE_OPTIONS = ScoreOptions()


class ClusterEngine:
    """Serves the catalog's versions from their Ray Serve deployments (see the module docs)."""

    def __init__(
        self, specs: list[ModelSpec], data_dir: Path, settings: EngineSettings, log_level: str = "info"
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.metrics = Metrics(ClusterRegistry())  # the replicas' model work merged in (cluster/metrics.py)
        self._log_level = log_level
        self._registry = self._new_registry(specs)
        self._handles: dict[str, DeploymentHandle] = {}
        self._deployed: dict[str, str] = {}  # the digest of each version's replicas (cluster/deployment.py)
        self._loaded: dict[str, ModelInfo] = {}  # what each version's replicas said they serve
        self._in_flight: Counter[str] = Counter()
        self._released = threading.Condition()
        self.ready = False

    @property
    def specs(self) -> list[ModelSpec]:
        return self._registry.specs

    @property
    def models(self) -> list[ModelView]:
        """The versions whose deployments have answered at least once (the API names their specs)."""
        return [view for view in self.catalog() if view.loaded is not None]

    def catalog(self) -> list[ModelView]:
        """Every configured version, marked current or not, with what its replicas serve once known."""
        return [self._with_loaded(view) for view in self._registry.catalog()]

    def describe(self, model: str) -> tuple[ModelView, list[ModelView]]:
        view, versions = self._registry.describe(model)
        return self._with_loaded(view), [self._with_loaded(v) for v in versions]

    def load(self) -> None:
        """Deploy every version (blocking until each runs); asks eager ones what they serve."""
        self._deploy_all(self._registry)
        self.ready = True

    def reconfigure(self, specs: list[ModelSpec]) -> None:
        """Serve `specs` from now on without failing a request.

        New versions are deployed and running before the swap; versions that stay keep
        their replicas, unless their replica settings changed: then they are deployed
        again, which Serve rolls out replica by replica; removed ones are deleted once
        their last request is answered.
        """
        registry = self._new_registry(specs)
        self._deploy_all(registry)
        old, self._registry = self._registry, registry
        kept = {_key(view) for view in registry.catalog()}
        for view in old.catalog():
            if _key(view) not in kept:
                self._retire(view)

    def close(self) -> None:
        """Stop answering; the deployments stay for other ingresses (see docs/scaling.md)."""
        self.ready = False

    async def embed(
        self,
        model: str,
        inputs: Inputs,
        options: EmbedOptions = _DEFAULT_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Embeddings:
        """Embed with the version `model` resolves to, on its deployment (see the module docs)."""
        return await self._answer("embed", model, (inputs,), options, admit, authorize)

    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        options: ScoreOptions = _DEFAULT_SCORE_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Scores:
        """Score `documents` against `query` on the reranker's deployment."""
        return await self._answer("rerank", model, (query, list(documents)), options, admit, authorize)

    async def classify(
        self,
        model: str,
        inputs: Sequence[ClassifyInput],
        options: ScoreOptions = _DEFAULT_SCORE_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Classifications:
        """Every label's probability for each input, on the classifier's deployment."""
        return await self._answer("classify", model, (list(inputs),), options, admit, authorize)

    async def tokenize(
        self,
        model: str,
        texts: list[str],
        *,
        add_special_tokens: bool = True,
        authorize: Authorization | None = None,
    ) -> tuple[ModelInfo, list[list[Token]]]:
        """Each text's tokens as the version `model` resolves to reads them (its replica tokenizes)."""
        key = _key(self._registry.route(model, authorize=authorize))
        with self._using(key):
            answer = await self._call(key, "tokenize", (texts,), {"add_special_tokens": add_special_tokens})
        return _unwrap(answer)

    async def decode(
        self,
        model: str,
        ids: list[list[int]],
        *,
        skip_special_tokens: bool = True,
        authorize: Authorization | None = None,
    ) -> tuple[ModelInfo, list[str]]:
        """Token ids back to text in the vocabulary of the version `model` resolves to."""
        key = _key(self._registry.route(model, authorize=authorize))
        with self._using(key):
            answer = await self._call(key, "decode", (ids,), {"skip_special_tokens": skip_special_tokens})
        return _unwrap(answer)

    async def _answer(
        self,
        method: str,
        model: str,
        args: tuple,
        options: EmbedOptions | ScoreOptions,
        admit: Admission | None,
        authorize: Authorization | None,
    ) -> Any:
        """One task's call on the deployment of the version `model` resolves to, then its token limit."""
        view = self._registry.route(model, expect_version=options.expect_version, authorize=authorize)
        key = _key(view)
        with self._using(key):
            pinned = replace(options, expect_version=None)  # checked here, on the version resolved
            answer = _unwrap(await self._call(key, method, (*args, pinned), {}))
        if admit is not None:
            admit(answer.tokens)
        self._loaded[key] = answer.model
        return answer

    async def _call(self, key: str, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                return await self._handles[key].call.remote(method, key, args, kwargs)
            except (RayActorError, ReplicaUnavailableError) as error:
                if time.monotonic() > deadline:
                    raise NotReady(f"no replica of '{key}' is answering", retry_after=1) from error
                log.warning("a replica of %s failed while answering; sending the call again", key)
                await asyncio.sleep(_RETRY_PAUSE)
            except BackPressureError as error:
                raise Overloaded(f"every replica of '{key}' is full", retry_after=1) from error

    def _new_registry(self, specs: list[ModelSpec]) -> Registry:
        # the registry resolves names and versions here; it never loads a model in this process
        return Registry(specs, self.data_dir, self.settings.calls, self.metrics, load_model)

    def _deploy_all(self, registry: Registry) -> None:
        for view in registry.catalog():
            key, label = _key(view), version_label(view.spec.name, view.version)
            made_as = digest(view.spec, self.data_dir, self.settings, self._log_level)
            handle = self._handles.get(key) if self._deployed.get(key) == made_as else None
            handle = handle or running(view.spec, view.version, made_as)
            if handle is not None:
                log.info("deployment of %s unchanged: its replicas keep serving", label)
            else:
                started = time.perf_counter()
                handle = deploy(view.spec, view.version, self.data_dir, self.settings, self._log_level)
                log.info("deployment of %s running in %.1fs", label, time.perf_counter() - started)
            self._handles[key], self._deployed[key] = handle, made_as
            if view.spec.load == "eager":
                self._loaded[key] = handle.info.remote().result()

    def _retire(self, view: ModelView) -> None:
        key = _key(view)
        with self._released:
            self._released.wait_for(lambda: self._in_flight[key] == 0, timeout=_RETIRE_TIMEOUT)
        undeploy(view.spec, view.version)
        self._handles.pop(key, None)
        self._deployed.pop(key, None)
        self._loaded.pop(key, None)

    @contextlib.contextmanager
    def _using(self, key: str) -> Iterator[None]:
        with self._released:
            self._in_flight[key] += 1
        try:
            yield
        finally:
            with self._released:
                self._in_flight[key] -= 1
                self._released.notify_all()

    def _with_loaded(self, view: ModelView) -> ModelView:
        return replace(view, loaded=self._loaded.get(_key(view)))


def _unwrap(answer: Any) -> Any:
    """A replica's answer, or the error it refused with raised here (errors travel as values)."""
    if isinstance(answer, Failure):
        raise answer.error()
    return answer


def _key(view: ModelView) -> str:
    """A version's pin: `name@full-version`, which its replicas resolve to exactly that version."""
    return f"{view.spec.name}@{view.version}"
