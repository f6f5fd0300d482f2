"""Choosing and opening the runtime a model spec asks for, building artifacts on first use.

- onnx: fp32 is ONNX Runtime on the verified export; bf16/fp16 are refused on CPU;
  int8 is ORT dynamic, per-channel.
- openvino: fp32 is the CPU's best precision that stays fp32-equivalent; bf16/fp16 that
  precision; int8 NNCF post-training.
- torch: PyTorch at every float precision; int8 refused.
- auto: fp32 is the fastest of onnx/openvino that is fp32-equivalent, measured once;
  bf16 is OpenVINO bf16 (refused on a CPU without it), fp16 PyTorch; int8 the faster of
  onnx/openvino.

Every choice `auto` makes is measured on this machine when the artifact is first built
(speed and agreement with fp32 on the probe texts) and recorded beside the artifact, so a
default install is as fast as the hardware allows and later starts repeat the choice.
Every non-exact variant reports its measured agreement with fp32 (`accuracy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.errors import ConfigError
from keepwarm.runtimes.accuracy import (
    Batch,
    agreement,
    embed_all,
    fp32_equivalent,
    texts_per_second,
    workload,
)
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.export import export_key, export_onnx

log = logging.getLogger(__name__)

INT8_MIN_MEAN_COSINE = 0.99  # an int8 candidate below this is only chosen if no other qualifies
INT8_MIN_RANK_CORRELATION = 0.99  # the same bar for a score head's int8 candidate

# (fp32 runtime, a new build's runtime) -> how much retrieval the build loses, recorded with it
RetrievalCheck = Callable[[Runtime, Runtime], dict[str, Any]]


@dataclass
class OpenedRuntime:
    """A ready runtime and what to tell users about it."""

    runtime: Runtime
    dtype: str
    accuracy: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    speed: float | None = None  # texts/s on the typical calls, where opening it measured that already


def resolve_runtime(spec: ModelSpec) -> str:
    """The runtime family for the spec before any measurement (auto resolves later)."""
    if spec.runtime != "auto":
        return spec.runtime
    if spec.device == "cuda":
        return "torch" if spec.dtype in ("fp16", "bf16") else "onnx"
    return "torch" if spec.dtype == "fp16" else "auto"


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


@dataclass
class _Base:
    """The verified fp32 ONNX export every other variant starts from, and its probe vectors."""

    spec: ModelSpec
    store: ArtifactStore
    folder: Path
    artifact: dict[str, Any]
    probe: list[Batch]
    calibration: Callable[[], list[Batch]]  # tokenized only when something is built or measured
    retrieval_loss: RetrievalCheck | None = None

    @cached_property
    def typical(self) -> list[Batch]:
        """The calibration texts' calls: int8 calibrates on them, and speed is measured on them.

        Their lengths run to the model's limit as served texts do; the short probe texts
        ranked two runtimes differently from served traffic (docs/benchmarks.md).
        """
        return self.calibration()

    @property
    def model_path(self) -> Path:
        return self.folder / self.artifact["file"]

    @cached_property
    def fp32(self) -> Runtime:
        from keepwarm.runtimes.ort import OnnxRuntime

        return OnnxRuntime(self.spec, self.model_path)

    @cached_property
    def reference(self) -> np.ndarray:
        return embed_all(self.fp32, self.probe)

    def derived(self, suffix: str, builder: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        key = f"{self.folder.name}-{suffix}"
        return self.store.get(key) or self.store.build(key, builder)


def onnx_fp32_artifact(
    spec: ModelSpec, store: ArtifactStore, fingerprint: str
) -> tuple[Path, dict[str, Any]]:
    """The verified fp32 ONNX export of the model (built once, then cached)."""
    key = export_key(spec, fingerprint)
    return store.get(key) or store.build(key, partial(export_onnx, spec))


def open_runtime(
    spec: ModelSpec,
    store: ArtifactStore,
    fingerprint: str,
    probe: list[Batch],
    calibration: Callable[[], list[Batch]],
    retrieval_loss: RetrievalCheck | None = None,
) -> OpenedRuntime:
    """Open the runtime for `spec`.

    `probe` batches measure every variant that is not exact for accuracy; `calibration`
    returns the batches static int8 quantization calibrates on and speeds are measured on
    (called only when something is built or measured);
    `retrieval_loss` measures what an int8 build loses in search, once, when it is built.
    """
    family = resolve_runtime(spec)
    if family == "torch":
        return _open_torch(spec, probe)
    folder, artifact = onnx_fp32_artifact(spec, store, fingerprint)
    base = _Base(spec, store, folder, artifact, probe, calibration, retrieval_loss)
    if family == "auto":
        return _open_fastest(base)
    return _open(family, spec.dtype, base)


def _open(family: str, dtype: str, base: _Base) -> OpenedRuntime:
    opener = _OPENERS.get((family, dtype))
    if opener is None:
        raise ConfigError(f"key 'dtype': {dtype} is not available with runtime '{family}'")
    opened = opener(base)
    if dtype != "fp32" or family != "onnx":
        log.info("model '%s' on %s %s: accuracy %s", base.spec.name, family, dtype, opened.accuracy)
    return opened


def _onnx_fp32(base: _Base) -> OpenedRuntime:
    from keepwarm.runtimes.ort import OnnxRuntime

    accuracy = {"reference": "torch fp32", "min_cosine": base.artifact["min_cosine_to_torch"]}
    return OpenedRuntime(OnnxRuntime(base.spec, base.model_path), "fp32", accuracy, base.artifact)


def _quantized(
    base: _Base,
    suffix: str,
    quantize: Callable[..., dict[str, Any]],
    open_built: Callable[[Path, dict[str, Any]], Runtime],
) -> OpenedRuntime:
    """The int8 artifact `quantize` builds once, opened with `open_built`.

    What it is measured on is computed only when it is built: the fp32 probe reference
    (cosines) and, given a check, the retrieval it loses.
    """

    def build(folder: Path) -> dict[str, Any]:
        artifact = quantize(base.spec, base.model_path, base.reference, base.probe, folder)
        if base.retrieval_loss is not None:
            artifact["accuracy"]["retrieval"] = base.retrieval_loss(base.fp32, open_built(folder, artifact))
        return artifact

    folder, artifact = base.derived(suffix, build)
    return OpenedRuntime(open_built(folder, artifact), "int8", artifact["accuracy"], artifact)


def _onnx_int8(base: _Base) -> OpenedRuntime:
    from keepwarm.runtimes.ort import OnnxRuntime
    from keepwarm.runtimes.quantize import quantize_int8

    def open_built(folder: Path, artifact: dict[str, Any]) -> Runtime:
        return OnnxRuntime(base.spec, folder / artifact["file"])

    return _quantized(base, "ort-int8", quantize_int8, open_built)


def _openvino_fp32(base: _Base) -> OpenedRuntime:
    from keepwarm.runtimes import openvino

    def measure(_: Path) -> dict[str, Any]:
        return openvino.choose_precision(base.spec, base.model_path, base.reference, base.probe, base.typical)

    _, chosen = base.derived("openvino-fastest-precision", measure)
    runtime = openvino.OpenVinoRuntime(base.spec, base.model_path, precision=chosen["precision"])
    accuracy = {"reference": "onnx fp32", "precision": chosen["precision"], **chosen["accuracy"]}
    timed = "measured_on" in chosen  # on the typical calls; records before bba222f timed the probe texts
    speed = chosen["tried"][chosen["precision"]]["texts_per_second"] if timed else None
    return OpenedRuntime(runtime, "fp32", accuracy, chosen, speed)


def _openvino_reduced(dtype: str) -> Callable[[_Base], OpenedRuntime]:
    def opener(base: _Base) -> OpenedRuntime:
        from keepwarm.runtimes import openvino

        if dtype == "bf16" and "bf16" not in openvino.cpu_precisions():
            raise ConfigError("key 'dtype': this CPU has no bf16 instructions; use fp32 or int8")
        runtime = openvino.OpenVinoRuntime(base.spec, base.model_path, precision=dtype.replace("fp", "f"))
        accuracy = {
            "reference": "onnx fp32",
            **agreement(base.spec, base.reference, embed_all(runtime, base.probe)),
        }
        return OpenedRuntime(runtime, dtype, accuracy)

    return opener


def _openvino_int8(base: _Base) -> OpenedRuntime:
    from keepwarm.runtimes import openvino

    def quantize(*args: Any) -> dict[str, Any]:
        return openvino.quantize_int8(*args, calibration=base.typical)

    def open_built(folder: Path, artifact: dict[str, Any]) -> Runtime:
        return openvino.OpenVinoRuntime(base.spec, folder / artifact["file"], precision=artifact["precision"])

    return _quantized(base, openvino.INT8_FORMAT, quantize, open_built)


_OPENERS: dict[tuple[str, str], Callable[[_Base], OpenedRuntime]] = {
    ("onnx", "fp32"): _onnx_fp32,
    ("onnx", "int8"): _onnx_int8,
    ("openvino", "fp32"): _openvino_fp32,
    ("openvino", "bf16"): _openvino_reduced("bf16"),
    ("openvino", "fp16"): _openvino_reduced("fp16"),
    ("openvino", "int8"): _openvino_int8,
}
_AUTO_CANDIDATES = {
    "fp32": ("onnx", "openvino"),
    "int8": ("onnx", "openvino"),
    "bf16": ("openvino",),
}


def _qualifies(dtype: str, accuracy: dict[str, Any]) -> bool:
    if dtype == "int8":
        if "rank_correlation" in accuracy:
            return accuracy["rank_correlation"] >= INT8_MIN_RANK_CORRELATION
        return accuracy.get("mean_cosine", 1.0) >= INT8_MIN_MEAN_COSINE
    return fp32_equivalent(accuracy)


def _open_fastest(base: _Base) -> OpenedRuntime:
    """runtime = auto: measure each candidate once, keep the fastest that is accurate enough."""
    dtype = base.spec.dtype
    candidates = _AUTO_CANDIDATES[dtype]

    def measure(_: Path) -> dict[str, Any]:
        results = {}
        for family in candidates:
            opened = _open(family, dtype, base)
            results[family] = {
                "texts_per_second": opened.speed or texts_per_second(opened.runtime, base.typical),
                "accuracy": opened.accuracy,
            }
        good = [f for f in candidates if _qualifies(dtype, results[f]["accuracy"])] or list(candidates)
        choice = max(good, key=lambda f: results[f]["texts_per_second"])
        log.info("model '%s' runtime auto (%s): chose %s from %s", base.spec.name, dtype, choice, results)
        return {"choice": choice, "candidates": results, "measured_on": workload(base.typical)}

    _, selection = base.derived(f"fastest-runtime-{dtype}", measure)
    opened = _open(selection["choice"], dtype, base)
    opened.artifact = {**opened.artifact, "auto_selection": selection}
    return opened


def _open_torch(spec: ModelSpec, probe: list[Batch]) -> OpenedRuntime:
    from keepwarm.runtimes.pytorch import TorchRuntime

    runtime = TorchRuntime(spec, dtype="fp32")
    if spec.dtype == "fp32":
        return OpenedRuntime(runtime, "fp32", {"reference": "torch fp32", "min_cosine": 1.0})
    reference = embed_all(runtime, probe)
    runtime.set_dtype(spec.dtype)
    accuracy = {"reference": "torch fp32", **agreement(spec, reference, embed_all(runtime, probe))}
    log.info("model '%s' on torch %s: accuracy %s", spec.name, spec.dtype, accuracy)
    return OpenedRuntime(runtime, spec.dtype, accuracy)
