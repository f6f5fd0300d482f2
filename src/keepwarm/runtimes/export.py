"""Export a Hugging Face transformer under its head to ONNX, and prove the export is exact before use.

The graph is produced by torch's dynamo exporter: the older TorchScript exporter was
measured to give wrong outputs on some models at some shapes. Whatever the exporter,
every artifact is compared with PyTorch at several batch sizes, lengths and paddings
before it is cached, and rejected if it disagrees.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.heads import OUTPUT_NAMES, takes_token_types
from keepwarm.runtimes.pooling import l2_normalize, pool

log = logging.getLogger(__name__)

EXPORT_FORMAT = "onnx-fp32-dynamo-v1"
ONNX_FILE = "model.onnx"
MIN_COSINE = 0.99999
MAX_LOGIT_ERROR = 1e-4  # score heads: largest difference to PyTorch's logits an export may have
# (batch size, longest length, pad the other rows to shorter lengths?)
_PROBE_SHAPES = ((1, 1, False), (1, 9, False), (3, 17, True), (8, 64, True), (2, 0, True))


def export_key(spec: ModelSpec, fingerprint: str) -> str:
    """Folder name in the artifact store: model files, export recipe and exporter versions."""
    import hashlib

    recipe = f"{fingerprint}|{EXPORT_FORMAT}|torch {version('torch')}|transformers {version('transformers')}"
    if spec.head != "base":  # the same files under another head are another graph
        recipe += f"|head {spec.head} {list(spec.score_token_ids)}"
    return f"{spec.name}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


def _probe_batches(spec: ModelSpec, vocab_size: int, segments: bool) -> list[tuple[np.ndarray, ...]]:
    """Random ids in several shapes; with `segments`, each row's second half is segment 1 (a pair)."""
    rng = np.random.default_rng(0)
    batches = []
    for size, length, padded in _PROBE_SHAPES:
        length = length or min(spec.max_tokens, 512)
        ids = rng.integers(5, vocab_size, size=(size, length), dtype=np.int64)
        mask = np.ones_like(ids)
        if padded:
            for row in range(1, size):
                mask[row, rng.integers(1, length + 1) :] = 0
            ids[mask == 0] = 0
        types = np.zeros_like(ids)
        types[:, length // 2 :] = 1
        batches.append((ids, mask, types * mask) if segments else (ids, mask))
    return batches


def verify(
    spec: ModelSpec, reference: Any, candidate: Any, vocab_size: int, segments: bool = False
) -> dict[str, float]:
    """Compare two runtimes' outputs on probe batches (pooled vectors, or logits); raise if they differ."""
    worst_cosine, worst_abs = 1.0, 0.0
    for batch in _probe_batches(spec, vocab_size, segments):
        mask = batch[1]
        expected = reference.outputs(*batch)
        actual = candidate.outputs(*batch)
        valid = mask.astype(bool) if spec.head == "base" else slice(None)
        worst_abs = max(worst_abs, float(np.abs(expected[valid] - actual[valid]).max()))
        if spec.head == "base":
            a = l2_normalize(pool(expected, mask, spec.pooling))
            b = l2_normalize(pool(actual, mask, spec.pooling))
            worst_cosine = min(worst_cosine, float((a * b).sum(axis=1).min()))
    if worst_cosine < MIN_COSINE or (spec.head != "base" and worst_abs > MAX_LOGIT_ERROR):
        raise RuntimeError(
            f"exported graph for '{spec.name}' disagrees with PyTorch "
            f"(min cosine {worst_cosine:.6f}, max abs error {worst_abs:.3g}); refusing to use it"
        )
    return {"min_cosine_to_torch": worst_cosine, "max_abs_error_to_torch": worst_abs}


@contextlib.contextmanager
def _quiet_exporter() -> Any:
    """The exporter narrates every pass at INFO and warns about axis names; keep logs readable."""
    noisy = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in noisy]
    for logger in noisy:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)


def export_onnx(spec: ModelSpec, folder: Path) -> dict[str, Any]:
    """Write `model.onnx` for `spec` into `folder`, verify it, and return its metadata."""
    import torch

    from keepwarm.runtimes.ort import OnnxRuntime
    from keepwarm.runtimes.pytorch import TorchRuntime

    started = time.perf_counter()
    reference = TorchRuntime(spec)
    segments = takes_token_types(spec, reference.model.config)

    batch = torch.export.Dim("batch", min=1, max=65536)
    tokens = torch.export.Dim("tokens", min=1, max=max(spec.max_tokens, 2))
    # distinct tensors: passing one object twice makes the exporter alias the inputs
    example_ids = torch.randint(5, 100, (2, 8), dtype=torch.int64)
    example_mask = torch.ones((2, 8), dtype=torch.int64)
    example_mask[1, 5:] = 0
    names = ["input_ids", "attention_mask"]
    examples = [example_ids, example_mask]
    if segments:
        names.append("token_type_ids")
        examples.append(torch.cat([torch.zeros((2, 4)), torch.ones((2, 4))], dim=1).long() * example_mask)
    log.info("exporting '%s' to ONNX (once; the result is cached)", spec.name)
    with _quiet_exporter():
        torch.onnx.export(
            reference.model,
            tuple(examples),
            str(folder / ONNX_FILE),
            dynamo=True,
            input_names=names,
            output_names=[OUTPUT_NAMES[spec.head]],
            dynamic_shapes={name: {0: batch, 1: tokens} for name in names},
            optimize=True,
            external_data=False,
            verbose=False,
        )
    candidate = OnnxRuntime(spec, folder / ONNX_FILE)
    accuracy = verify(spec, reference, candidate, int(reference.model.config.vocab_size), segments)
    log.info("exported '%s' in %.1fs: %s", spec.name, time.perf_counter() - started, accuracy)
    return {
        "format": EXPORT_FORMAT,
        "file": ONNX_FILE,
        "dimensions": candidate.dimensions,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "onnxruntime": version("onnxruntime"),
        "export_seconds": round(time.perf_counter() - started, 2),
        **accuracy,
    }
