"""The engine's version registry and request path, fast: models built by a test loader around a runtime of
known vectors, so nothing is exported and every vector says which version made it and from which tokens.

Equality with sentence-transformers is tested on the real model elsewhere (test_engine.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_for

from keepwarm.catalog import DEFAULT_ENTRY, ArtifactStore, ModelSpec
from keepwarm.engine import CallLimits, CallLimitSettings, EmbedOptions, Engine
from keepwarm.engine.model import ServedModel, start_model
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.errors import NotReady, PermissionDenied
from keepwarm.metrics import Metrics
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.factory import OpenedRuntime

NAME = "known"


class _KnownVectors(Runtime):
    """Each row's vector is (its real token count, the sum of its ids, the model's max_tokens, 1)."""

    name = "known"

    @property
    def dimensions(self) -> int:
        return 4

    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        raise AssertionError("embed is overridden")

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        lengths = attention_mask.sum(axis=1)
        sums = (input_ids * attention_mask).sum(axis=1)
        tag = np.full(len(lengths), self.spec.max_tokens)
        return np.stack([lengths, sums, tag, np.ones(len(lengths))], axis=1).astype(np.float32)


class _Loader:
    """A loader for the Engine's seam: counts its loads and skips export and measurement."""

    def __init__(self) -> None:
        self.loads: list[ModelSpec] = []

    def __call__(
        self,
        spec: ModelSpec,
        fingerprint: str,
        version: str,
        store: ArtifactStore,
        settings: CallLimitSettings,
        metrics: Metrics,
    ) -> ServedModel:
        self.loads.append(spec)
        resolved = CallLimits(**(asdict(settings) | {"max_call_tokens": 1024, "max_padding_tokens": 64}))
        opened = OpenedRuntime(_KnownVectors(spec), "fp32")
        return start_model(spec, fingerprint, version, ModelTokenizer(spec), opened, resolved, metrics)


def _spec(max_tokens: int = 32, **settings: object) -> ModelSpec:
    """The bundled model's files (tokenizer, config) as a version of NAME; max_tokens tells versions apart."""
    base = DEFAULT_ENTRY.to_spec()
    return ModelSpec(
        name=NAME,
        directory=base.directory,
        pooling="mean",
        normalize=False,
        max_tokens=max_tokens,
        **settings,
    )


def _engine(tmp_path: Path, specs: list[ModelSpec], loader: _Loader | None = None) -> Engine:
    return Engine(specs, tmp_path, loader=loader or _Loader())


def test_the_engine_as_a_context_manager_loads_eager_models_and_closes_on_exit(tmp_path: Path) -> None:
    loader = _Loader()
    with _engine(tmp_path, [_spec()], loader) as engine:
        assert engine.ready and len(loader.loads) == 1
        assert engine.embed_sync(NAME, ["hello"]).vectors.shape == (1, 4)
    assert not engine.ready
    with pytest.raises(NotReady):
        engine.embed_sync(NAME, ["after close"])


def test_authorize_sees_the_version_that_then_serves_the_request(tmp_path: Path) -> None:
    # a reload swaps the current version between the permission check and the embedding:
    # the request is still served by the version it was checked on
    old, new = _spec(max_tokens=32), _spec(max_tokens=48)
    with _engine(tmp_path, [old]) as engine:
        old_version = engine.describe(NAME)[0].version
        reload = threading.Thread(target=engine.reconfigure, args=([new],))
        checked: list[ModelSpec] = []

        def authorize(spec: ModelSpec) -> None:
            checked.append(spec)
            reload.start()
            assert wait_for(lambda: engine.describe(NAME)[0].spec.max_tokens == 48)

        result = engine.embed_sync(NAME, ["hello"], authorize=authorize)
        reload.join(timeout=30)
        assert checked == [old]
        assert result.vectors[0, 2] == 32 and result.model.version == old_version
        assert engine.embed_sync(NAME, ["hello"]).vectors[0, 2] == 48  # the old version retired after it


def test_a_refused_authorization_queues_nothing_and_lets_the_version_retire(tmp_path: Path) -> None:
    with _engine(tmp_path, [_spec(max_tokens=32)]) as engine:

        def refuse(spec: ModelSpec) -> None:
            raise PermissionDenied(f"not {spec.name}")

        with pytest.raises(PermissionDenied):
            engine.embed_sync(NAME, ["hello"], authorize=refuse)
        queued = engine.resolve(NAME).scheduler.queued_tokens
        reload = threading.Thread(target=engine.reconfigure, args=([_spec(max_tokens=48)],))
        reload.start()
        reload.join(timeout=30)  # a version still marked in use would hold the reload for minutes
        assert queued == 0 and not reload.is_alive()


def test_a_lazy_model_loads_once_for_concurrent_first_requests(tmp_path: Path) -> None:
    loader = _Loader()
    with _engine(tmp_path, [_spec(load="lazy")], loader) as engine, ThreadPoolExecutor(8) as pool:
        assert loader.loads == []
        results = list(pool.map(lambda n: engine.embed_sync(NAME, [f"text {n}"]), range(8)))
    assert len(loader.loads) == 1 and len({r.model.version for r in results}) == 1


def test_a_pinned_version_is_served_beside_the_current_one(tmp_path: Path) -> None:
    old, new = _spec(max_tokens=32, current=False), _spec(max_tokens=48)
    with _engine(tmp_path, [old, new]) as engine:
        pinned = engine.describe(NAME)[1][0]  # the versions in catalog order: `old` first
        assert engine.embed_sync(f"{NAME}@{pinned.version[:12]}", ["hi"]).vectors[0, 2] == 32
        assert engine.embed_sync(NAME, ["hi"]).vectors[0, 2] == 48


def test_repeated_inputs_are_computed_once_and_cached_ones_not_again(tmp_path: Path) -> None:
    with _engine(tmp_path, [_spec()]) as engine:
        first = engine.embed_sync(NAME, ["same", "other", "same"])
        again = engine.embed_sync(NAME, ["other", "same"])
    assert np.array_equal(first.vectors[0], first.vectors[2]) and first.cached_inputs == 1
    assert again.cached_inputs == 2 and np.array_equal(again.vectors, first.vectors[[1, 0]])


def test_chunk_windows_are_combined_by_their_token_counts(tmp_path: Path) -> None:
    spec = _spec(max_tokens=8, overflow="chunk")
    text = " ".join(f"w{n}" for n in range(20))
    with _engine(tmp_path, [spec]) as engine:
        combined = engine.embed_sync(NAME, [text]).vectors[0]
        windows = engine.resolve(NAME).tokenizer.encode([text], overflow="chunk").ids
    lengths = np.array([len(w) for w in windows], dtype=np.float64)
    expected_length = (lengths * lengths).sum() / lengths.sum()  # vector[0] is each window's token count
    expected_sum = sum(len(w) * w.sum() for w in windows) / lengths.sum()
    assert len(windows) > 1
    assert combined[0] == pytest.approx(expected_length) and combined[1] == pytest.approx(expected_sum)


def test_dimensions_cut_the_vector_and_renormalise_it(tmp_path: Path) -> None:
    with _engine(tmp_path, [_spec()]) as engine:
        full = engine.embed_sync(NAME, ["hello"]).vectors[0]
        cut = engine.embed_sync(NAME, ["hello"], EmbedOptions(dimensions=2)).vectors[0]
    assert cut == pytest.approx(full[:2] / np.linalg.norm(full[:2]))
