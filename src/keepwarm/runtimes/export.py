"""Export a Hugging Face transformer to ONNX, and prove the export is exact before use.

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
from keepwarm.runtimes.pooling import l2_normalize, pool

log = logging.getLogger(__name__)

EXPORT_FORMAT = "onnx-fp32-dynamo-v1"
ONNX_FILE = "model.onnx"
MIN_COSINE = 0.99999
# (batch size, longest length, pad the other rows to shorter lengths?)
_PROBE_SHAPES = ((1, 1, False), (1, 9, False), (3, 17, True), (8, 64, True), (2, 0, True))


def export_key(spec: ModelSpec, fingerprint: str) -> str:
    """Folder name in the artifact store: model files, export recipe and exporter versions."""
    import hashlib

    recipe = f"{fingerprint}|{EXPORT_FORMAT}|torch {version('torch')}|transformers {version('transformers')}"
    return f"{spec.name}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


def _probe_batches(spec: ModelSpec, vocab_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
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
        batches.append((ids, mask))
    return batches


def verify(spec: ModelSpec, reference: Any, candidate: Any, vocab_size: int) -> dict[str, float]:
    """Compare two runtimes' pooled vectors on probe batches; raise if they differ."""
    worst_cosine, worst_abs = 1.0, 0.0
    for ids, mask in _probe_batches(spec, vocab_size):
        expected = reference.hidden_states(ids, mask)
        actual = candidate.hidden_states(ids, mask)
        valid = mask.astype(bool)
        worst_abs = max(worst_abs, float(np.abs(expected[valid] - actual[valid]).max()))
        a = l2_normalize(pool(expected, mask, spec.pooling))
        b = l2_normalize(pool(actual, mask, spec.pooling))
        worst_cosine = min(worst_cosine, float((a * b).sum(axis=1).min()))
    if worst_cosine < MIN_COSINE:
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

    class _HiddenStates(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    batch = torch.export.Dim("batch", min=1, max=65536)
    tokens = torch.export.Dim("tokens", min=1, max=max(spec.max_tokens, 2))
    # two distinct tensors: passing one object twice makes the exporter alias the inputs
    example_ids = torch.randint(5, 100, (2, 8), dtype=torch.int64)
    example_mask = torch.ones((2, 8), dtype=torch.int64)
    example_mask[1, 5:] = 0
    log.info("exporting '%s' to ONNX (once; the result is cached)", spec.name)
    with _quiet_exporter():
        torch.onnx.export(
            _HiddenStates(reference.model),
            (example_ids, example_mask),
            str(folder / ONNX_FILE),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_shapes={"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}},
            optimize=True,
            external_data=False,
            verbose=False,
        )
    candidate = OnnxRuntime(spec, folder / ONNX_FILE)
    accuracy = verify(spec, reference, candidate, int(reference.model.config.vocab_size))
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
