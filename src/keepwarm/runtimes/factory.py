"""Choosing and opening the runtime a model spec asks for, building artifacts on first use.

| spec                         | runtime                                   | artifact                  |
|------------------------------|-------------------------------------------|---------------------------|
| runtime onnx/auto, fp32      | ONNX Runtime                              | verified fp32 ONNX export |
| runtime onnx/auto, int8      | ONNX Runtime                              | + dynamic int8 quantization |
| runtime torch (any dtype)    | PyTorch                                   | none                      |
| runtime auto, fp16/bf16      | PyTorch                                   | none                      |

Every non-exact variant reports its measured agreement with fp32 (`accuracy`), which the
API shows in the model's details.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.runtimes.accuracy import Batch, cosine_stats, embed_all
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.export import export_key, export_onnx

log = logging.getLogger(__name__)


@dataclass
class OpenedRuntime:
    """A ready runtime and what to tell users about it."""

    runtime: Runtime
    dtype: str
    accuracy: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)


def resolve_runtime(spec: ModelSpec) -> str:
    """The concrete runtime for the spec's `runtime` and `dtype`."""
    if spec.runtime != "auto":
        return spec.runtime
    return "torch" if spec.dtype in ("fp16", "bf16") else "onnx"


def check_device(spec: ModelSpec) -> None:
    """Fail before anything starts when a model asks for a GPU this machine cannot give it."""
    if spec.device != "cuda":
        return
    if resolve_runtime(spec) == "torch":
        from keepwarm.runtimes.pytorch import check_cuda

        check_cuda()
    else:
        from keepwarm.runtimes.ort import providers

        providers("cuda")


def onnx_fp32_artifact(spec: ModelSpec, store: ArtifactStore, fingerprint: str) -> tuple[Path, dict[str, Any]]:
    """The verified fp32 ONNX export of the model (built once, then cached)."""
    key = export_key(spec, fingerprint)
    return store.get(key) or store.build(key, partial(export_onnx, spec))


def open_runtime(spec: ModelSpec, store: ArtifactStore, fingerprint: str, probe: list[Batch]) -> OpenedRuntime:
    """Open the runtime for `spec`; `probe` batches measure any variant that is not exact."""
    if resolve_runtime(spec) == "torch":
        return _open_torch(spec, probe)
    from keepwarm.runtimes.ort import OnnxRuntime

    folder, artifact = onnx_fp32_artifact(spec, store, fingerprint)
    if spec.dtype != "int8":
        accuracy = {"reference": "torch fp32", "min_cosine": artifact["min_cosine_to_torch"]}
        return OpenedRuntime(OnnxRuntime(spec, folder / artifact["file"]), "fp32", accuracy, artifact)
    from keepwarm.runtimes.quantize import quantize_int8

    key = f"{folder.name}-int8"
    builder = partial(quantize_int8, spec, folder / artifact["file"], probe)
    int8_folder, int8_artifact = store.get(key) or store.build(key, builder)
    accuracy = int8_artifact["accuracy"]
    log.info(
        "model '%s' int8: mean cosine %.4f, min %.4f to fp32 on the probe set",
        spec.name, accuracy["mean_cosine"], accuracy["min_cosine"],
    )
    return OpenedRuntime(OnnxRuntime(spec, int8_folder / int8_artifact["file"]), "int8", accuracy, int8_artifact)


def _open_torch(spec: ModelSpec, probe: list[Batch]) -> OpenedRuntime:
    from keepwarm.runtimes.pytorch import TorchRuntime

    runtime = TorchRuntime(spec, dtype="fp32")
    if spec.dtype == "fp32":
        return OpenedRuntime(runtime, "fp32", {"reference": "torch fp32", "min_cosine": 1.0})
    reference = embed_all(runtime, probe)
    runtime.set_dtype(spec.dtype)
    accuracy = {"reference": "torch fp32", **cosine_stats(reference, embed_all(runtime, probe))}
    log.info("model '%s' %s: %s", spec.name, spec.dtype, accuracy)
    return OpenedRuntime(runtime, spec.dtype, accuracy)
