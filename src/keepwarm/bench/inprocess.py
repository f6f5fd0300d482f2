"""The baselines: the same model called in-process, with no server and no scheduler.

This is the best the hardware can do with a runtime: texts tokenized by the model's own
tokenizer, sorted by length and run in model calls of `--texts-per-call` texts (the
sort keeps padding, wasted compute, to a minimum), straight on `runtime.embed`.
Tokenization is inside the clock, as it is for the server. The baselines run in the
benchmark's process, which has the same CPU affinity as the server it started, and
never while the server is under load.

Between the two sits the engine itself (`engine_closed_loop`): the server's scheduler,
batching and model worker, driven in-process by as many concurrent callers as the
closed loop has clients. What it loses against the sorted calls is the engine's (calls
formed from whatever is queued, their padding); what the server loses against it is HTTP's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.bench.stats import Measurement
from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.engine import EmbedOptions, Engine, EngineSettings
from keepwarm.engine.model import ServedModel
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.engine.work import DENSE_ONLY
from keepwarm.engine.worker import pad_rows
from keepwarm.machine import available_cores
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.factory import onnx_fp32_artifact
from keepwarm.runtimes.ort import OnnxRuntime

Progress = Callable[[int], None]
_WARM_UP_TEXTS = 64


@dataclass
class Baseline:
    """A runtime measured in-process, and what it is called in the report."""

    label: str
    runtime: Runtime
    tokenizer: ModelTokenizer
    outputs: frozenset[str] = DENSE_ONLY  # with sparse/multivector: computed too, as the server does

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The dense vectors of one model call, computing every other output asked for alongside."""
        if self.outputs == DENSE_ONLY:
            return self.runtime.embed(input_ids, attention_mask)
        return np.stack([row.dense for row in self.runtime.produce(input_ids, attention_mask, self.outputs)])


def load_served(spec: ModelSpec, data_dir: Path) -> tuple[Engine, ServedModel]:
    """Load the model exactly as `keepwarm serve` does (same artifact, runtime and settings).

    With no embedding cache, as the benchmark's server runs: every phase measures compute.
    """
    engine = Engine([spec], data_dir, EngineSettings(cache_bytes=0))
    engine.load()
    return engine, engine.resolve(spec.name)


# CallLimits' fields by the names /v1/models reports them under (api/responses.py)
_REPORTED_AS = {
    "max_call_tokens": "max_batch_tokens",
    "max_call_rows": "max_batch_size",
    "max_padding_tokens": "max_padding_tokens",
    "token_multiple": "token_multiple",
}


def use_served_limits(served: ServedModel, reported: dict[str, Any]) -> dict[str, int]:
    """Form the in-process engine's calls as the server reports it forms its own; returns those limits.

    The server may run under `--max-batch-*` flags (`--server-arg`) that this process did
    not get; the engine phase must batch as the server does for the two to compare.
    """
    limits = served.scheduler.limits
    served.scheduler.limits = limits = dataclasses.replace(
        limits, **{field: reported.get(name, getattr(limits, field)) for field, name in _REPORTED_AS.items()}
    )
    return {name: getattr(limits, field) for field, name in _REPORTED_AS.items()}


def onnx_reference(served: ServedModel, data_dir: Path) -> Runtime:
    """ONNX Runtime fp32 on the exported graph: the served runtime itself when that is what it is."""
    if isinstance(served.runtime, OnnxRuntime) and served.opened.dtype == "fp32":
        return served.runtime
    folder, artifact = onnx_fp32_artifact(served.spec, ArtifactStore(data_dir), served.fingerprint)
    return OnnxRuntime(served.spec, folder / artifact["file"])


def throughput(
    baseline: Baseline, texts: list[str], per_call: int, progress: Progress
) -> tuple[Measurement, np.ndarray]:
    """Embed every text in length-sorted model calls; the vectors come back in text order."""
    _embed_sorted(baseline, texts[:_WARM_UP_TEXTS], per_call, lambda _: None)
    result = Measurement()
    with result.timed():
        vectors = _embed_sorted(baseline, texts, per_call, progress, result)
    return result, vectors


def engine_closed_loop(
    engine: Engine,
    model: str,
    requests: list[list[str]],
    callers: int,
    outputs: tuple[str, ...],
    progress: Progress,
) -> Measurement:
    """`callers` concurrent callers each embed the next request as soon as their last is answered.

    The closed loop of the load generator (bench/client.py) without HTTP: the same
    requests, truncated as the server's are, asking for the same outputs, after the same
    warm-up of one request per caller.
    """
    options = EmbedOptions(truncate=True, outputs=outputs)
    result = Measurement()

    async def caller(pending: Iterator[list[str]], measure: bool) -> None:
        for texts in pending:
            began = time.perf_counter()
            answer = await engine.embed(model, texts, options)
            if measure:
                result.add(len(texts), answer.tokens, time.perf_counter() - began)
                progress(len(texts))

    async def run() -> None:
        warm_up = iter(requests[:callers])
        await asyncio.gather(*(caller(warm_up, False) for _ in range(callers)))
        pending = iter(requests)
        with result.timed():
            await asyncio.gather(*(caller(pending, True) for _ in range(callers)))

    asyncio.run(run())
    return result


def single_calls(baseline: Baseline, text: str, count: int, gap: float, progress: Progress) -> Measurement:
    """Latency of one text, tokenized and embedded alone, `count` times `gap` seconds apart."""
    result = Measurement()
    for _ in range(count):
        time.sleep(gap)
        started = time.perf_counter()
        ids = baseline.tokenizer.encode_texts([text], overflow="truncate").ids
        baseline.embed(*pad_rows(ids, baseline.tokenizer.pad_id))
        result.add(1, len(ids[0]), time.perf_counter() - started)
        progress(1)
    result.seconds = sum(result.latencies)
    return result


def sentence_transformers(
    spec: ModelSpec, tokenizer: ModelTokenizer, texts: list[str], per_call: int, progress: Progress
) -> tuple[Measurement, np.ndarray]:
    """sentence-transformers' own `encode` (PyTorch) on the same length-sorted groups, for comparison."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(available_cores())
    model = SentenceTransformer(str(spec.directory), device="cpu")
    model.encode(texts[:_WARM_UP_TEXTS], batch_size=per_call)
    lengths = [len(ids) for ids in tokenizer.encode_texts(texts, overflow="truncate").ids]
    result = Measurement()
    with result.timed():
        vectors = _run_sorted(
            lengths,
            per_call,
            lambda rows: model.encode([texts[i] for i in rows], batch_size=per_call),
            progress,
            result,
        )
    return result, vectors


def _embed_sorted(
    baseline: Baseline, texts: list[str], per_call: int, progress: Progress, result: Measurement | None = None
) -> np.ndarray:
    ids = baseline.tokenizer.encode_texts(texts, overflow="truncate").ids
    pad_id = baseline.tokenizer.pad_id
    return _run_sorted(
        [len(row) for row in ids],
        per_call,
        lambda rows: baseline.embed(*pad_rows([ids[i] for i in rows], pad_id)),
        progress,
        result,
    )


def _run_sorted(
    lengths: list[int],
    per_call: int,
    embed: Callable[[list[int]], np.ndarray],
    progress: Progress,
    result: Measurement | None,
) -> np.ndarray:
    """Embed rows `per_call` at a time by ascending length; vectors come back in row order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    vectors: np.ndarray | None = None
    for start in range(0, len(order), per_call):
        rows = order[start : start + per_call]
        began = time.perf_counter()
        embedded = embed(rows)
        if vectors is None:
            vectors = np.empty((len(lengths), embedded.shape[1]), dtype=np.float32)
        vectors[rows] = embedded
        if result is not None:
            result.add(len(rows), sum(lengths[i] for i in rows), time.perf_counter() - began)
        progress(len(rows))
    return vectors
