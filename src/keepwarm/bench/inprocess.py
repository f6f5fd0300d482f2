"""The baselines: the same model called in-process, with no server and no scheduler.

This is the best the hardware can do with a runtime: texts tokenized by the model's own
tokenizer, sorted by length and run in batches of 32 (the sort keeps padding, wasted
compute, to a minimum), straight on `runtime.embed`. Tokenization is inside the clock,
as it is for the server. The baselines run in the benchmark's process, which has the
same CPU affinity as the server it started, and never while the server is under load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from keepwarm.bench.stats import Measurement
from keepwarm.catalog import ArtifactStore, DigestCache, ModelSpec
from keepwarm.engine import Engine
from keepwarm.engine.model import ServedModel
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.engine.worker import pad_batch
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.export import export_key, export_onnx
from keepwarm.runtimes.ort import OnnxRuntime, available_cores

Progress = Callable[[int], None]
_WARM_UP_TEXTS = 64


@dataclass
class Baseline:
    """A runtime measured in-process, and what it is called in the report."""

    label: str
    runtime: Runtime
    tokenizer: ModelTokenizer


def load_served(spec: ModelSpec, data_dir: Path) -> tuple[Engine, ServedModel]:
    """Load the model exactly as `keepwarm serve` does (same artifact, runtime and settings)."""
    engine = Engine([spec], data_dir)
    engine.load()
    return engine, engine.resolve(spec.name)


def onnx_reference(served: ServedModel, data_dir: Path) -> Runtime:
    """ONNX Runtime fp32 on the exported graph: the served runtime itself when that is what it is."""
    store = ArtifactStore(data_dir)
    key = export_key(served.spec, served.fingerprint)
    folder, artifact = store.get(key) or store.build(key, partial(export_onnx, served.spec))
    if isinstance(served.runtime, OnnxRuntime) and artifact == served.artifact:
        return served.runtime
    return OnnxRuntime(served.spec, folder / artifact["file"])


def throughput(baseline: Baseline, texts: list[str], batch: int, progress: Progress) -> tuple[Measurement, np.ndarray]:
    """Embed every text in length-sorted batches; the vectors come back in text order."""
    _embed_sorted(baseline, texts[:_WARM_UP_TEXTS], batch, lambda _: None)
    result = Measurement()
    cpu, began = time.process_time(), time.perf_counter()
    vectors = _embed_sorted(baseline, texts, batch, progress, result)
    result.seconds = time.perf_counter() - began
    result.cpu_seconds = time.process_time() - cpu
    return result, vectors


def single_calls(baseline: Baseline, text: str, count: int, gap: float, progress: Progress) -> Measurement:
    """Latency of one text, tokenized and embedded alone, `count` times `gap` seconds apart."""
    result = Measurement()
    for _ in range(count):
        time.sleep(gap)
        started = time.perf_counter()
        ids = baseline.tokenizer.encode_texts([text], truncate=True)
        baseline.runtime.embed(*pad_batch(ids, baseline.tokenizer.pad_id))
        result.add(1, len(ids[0]), time.perf_counter() - started)
        progress(1)
    result.seconds = sum(result.latencies)
    return result


def sentence_transformers(spec: ModelSpec, texts: list[str], batch: int, progress: Progress) -> tuple[Measurement, np.ndarray]:
    """sentence-transformers' own `encode` (PyTorch, sorts by length itself), for comparison."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(available_cores())
    model = SentenceTransformer(str(spec.directory), device="cpu")
    model.encode(texts[:_WARM_UP_TEXTS], batch_size=batch)
    result = Measurement()
    cpu, began = time.process_time(), time.perf_counter()
    vectors = model.encode(texts, batch_size=batch, convert_to_numpy=True)
    result.seconds = time.perf_counter() - began
    result.cpu_seconds = time.process_time() - cpu
    result.texts = len(texts)
    result.tokens = sum(len(ids) for ids in ModelTokenizer(spec).encode_texts(texts, truncate=True))
    progress(len(texts))
    return result, np.asarray(vectors, dtype=np.float32)


def _embed_sorted(
    baseline: Baseline, texts: list[str], batch: int, progress: Progress, result: Measurement | None = None
) -> np.ndarray:
    ids = baseline.tokenizer.encode_texts(texts, truncate=True)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    vectors = np.empty((len(ids), baseline.runtime.dimensions), dtype=np.float32)
    for start in range(0, len(order), batch):
        chosen = order[start : start + batch]
        began = time.perf_counter()
        vectors[chosen] = baseline.runtime.embed(*pad_batch([ids[i] for i in chosen], baseline.tokenizer.pad_id))
        if result is not None:
            result.add(len(chosen), sum(len(ids[i]) for i in chosen), time.perf_counter() - began)
        progress(len(chosen))
    return vectors
