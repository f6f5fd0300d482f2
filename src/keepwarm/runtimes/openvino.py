"""OpenVINO: reads the same exported ONNX graph, at the fastest precision that stays exact enough.

On some CPUs with bf16 instructions OpenVINO's bf16 inference is much faster than ONNX
Runtime fp32 while staying inside the fp32-equivalent bar; on others f32 is faster
(docs/benchmarks.md has the figures per machine). Precision is never assumed:
`choose_precision` measures each native precision for agreement with the fp32
reference and for speed, and keeps the fastest that agrees.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from keepwarm.catalog.spec import ModelSpec
from keepwarm.machine import available_cores
from keepwarm.runtimes.accuracy import (
    Batch,
    agreement,
    embed_all,
    fp32_equivalent,
    texts_per_second,
    workload,
)
from keepwarm.runtimes.base import Runtime, graph_feed

log = logging.getLogger(__name__)

# OpenVINO's CPU plugin caches compiled kernels per input shape, 5000 entries by default.
# Requests bring a new (rows, tokens) shape almost every call, so with OpenVINO's
# unbounded default the server's memory grew without end. A bounded cache keeps memory
# flat once the largest shape has run and costs little throughput; no cache at all costs
# much more (docs/benchmarks.md, "OpenVINO kernel cache").
KERNEL_CACHE_ENTRIES = 50
# A call's intermediate buffers stay allocated for the next call, sized by the largest
# call so far (rows × tokens², through attention), and glibc keeps what OpenVINO frees
# for reuse. Both are handed back once no large call has come for a while, so an idle
# server falls back towards its loaded size; a call under the threshold (one short text)
# never triggers it, so sparse single requests keep their buffers and their latency
# (docs/benchmarks.md, "Memory after load").
RELEASE_AFTER_IDLE_SECONDS = 2.0
LARGE_CALL_TOKENS = 512
_LIBC = ctypes.CDLL(None)  # this process's C library; malloc_trim is glibc's
# Beneath OpenVINO's cache, its copy of oneDNN keeps every primitive it has built (up to
# its default capacity); with shapes that rarely repeat they are memory never used again,
# and turning them off cost the default model no throughput. int8 graphs, whose widths
# are rounded so that shapes repeat, do use them again and keep them (docs/benchmarks.md,
# "oneDNN's primitive cache", has the figures). oneDNN reads the capacity from the
# environment once, when it builds its first graph: the process's first OpenVINO graph
# decides. PyTorch's own copy reads the same variable and runs bf16 much slower without
# its cache, so the variable is set only while that graph is built, and an operator's
# own value stands.
PRIMITIVE_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
INT8_FORMAT = "openvino-int8-nncf-v2"  # v2: longer calibration texts, SmoothQuant 0.6
INT8_FILE = "model.int8.xml"


class _FirstGraph:
    """Whether OpenVINO's oneDNN has read its primitive-cache capacity in this process yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built = False

    @contextlib.contextmanager
    def building(self, int8: bool) -> Iterator[None]:
        """Around anything that may build OpenVINO's first graph: unless it is int8, it reads 0."""
        if self._built or PRIMITIVE_CACHE_VARIABLE in os.environ:
            yield
            return
        with self._lock:  # a second thread's first graph waits, then finds the capacity read
            if self._built:
                yield
                return
            if not int8:
                os.environ[PRIMITIVE_CACHE_VARIABLE] = "0"
            try:
                yield
                self._built = True
            finally:
                os.environ.pop(PRIMITIVE_CACHE_VARIABLE, None)


_first_graph = _FirstGraph()


def cpu_precisions() -> list[str]:
    """Inference precisions this CPU runs natively, best first."""
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return (["bf16"] if "BF16" in capabilities else []) + ["f32"]


class OpenVinoRuntime(Runtime):
    """Runs an ONNX graph or OpenVINO IR on the CPU with a given inference precision."""

    name = "openvino"
    prepares_each_shape = True

    def __init__(
        self, spec: ModelSpec, model_path: Path, *, precision: str = "f32", threads: int | None = None
    ) -> None:
        super().__init__(spec)
        core = ov.Core()
        self.model_path = model_path
        self.single_threaded_copies = True
        self.precision = precision
        config = {
            "PERFORMANCE_HINT": "LATENCY",  # one model call at a time, using every core
            "INFERENCE_NUM_THREADS": threads or available_cores(),
            "INFERENCE_PRECISION_HINT": precision,
            "CPU_RUNTIME_CACHE_CAPACITY": KERNEL_CACHE_ENTRIES,
        }
        with _first_graph.building(int8=spec.dtype == "int8"):
            self._compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
        self._calling = threading.Lock()  # a release must not run during a call
        self._release: threading.Timer | None = None
        self._last_large_call = 0.0
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(0)
        self._inputs = {port.any_name for port in self._compiled.inputs}
        # read once: every request asks, and the binding call took ~0.4 ms of a short
        # request's time while a model call was running (py-spy on an idle-latency run)
        self._dimensions = int(self._output.get_partial_shape()[-1].get_length())

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def single_threaded_copy(self) -> OpenVinoRuntime:
        # one inference thread: OpenVINO then computes on the calling thread (measured)
        return OpenVinoRuntime(self.spec, self.model_path, precision=self.precision, threads=1)

    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        feed = graph_feed(self._inputs, input_ids, attention_mask, token_type_ids)
        with self._calling:
            result = self._request.infer(feed)
            vectors = np.array(result[self._output], dtype=np.float32)  # copy: the request reuses its buffer
        if input_ids.size > LARGE_CALL_TOKENS:
            self._release_when_idle()
        return vectors

    def _release_when_idle(self) -> None:
        """Note a large call; a countdown (one at a time) hands its buffers back once calls stop."""
        self._last_large_call = time.monotonic()
        if self._release is None or not self._release.is_alive():
            self._start_release(RELEASE_AFTER_IDLE_SECONDS)

    def _start_release(self, seconds: float) -> None:
        self._release = threading.Timer(seconds, self._release_memory)
        self._release.daemon = True
        self._release.start()

    def _release_memory(self) -> None:
        idle = time.monotonic() - self._last_large_call
        if idle < RELEASE_AFTER_IDLE_SECONDS:  # a large call came meanwhile: wait for the rest
            self._start_release(RELEASE_AFTER_IDLE_SECONDS - idle)
            return
        with self._calling:
            self._compiled.release_memory()
        trim = getattr(_LIBC, "malloc_trim", None)
        if trim is not None:
            trim(0)


def choose_precision(
    spec: ModelSpec, model_path: Path, reference: np.ndarray, probe: list[Batch], typical: list[Batch]
) -> dict[str, Any]:
    """The fastest native precision whose vectors on `probe` stay fp32-equivalent to `reference`.

    Measured, not assumed: whether bf16 pays depends on the CPU (docs/benchmarks.md).
    Speed is measured on `typical`, calls of texts as long as served ones.
    """
    tried = {}
    for precision in cpu_precisions():
        runtime = OpenVinoRuntime(spec, model_path, precision=precision)
        accuracy = agreement(spec, reference, embed_all(runtime, probe))
        tried[precision] = {**accuracy, "texts_per_second": texts_per_second(runtime, typical)}
    good = [p for p in tried if fp32_equivalent(tried[p])] or ["f32"]
    precision = max(good, key=lambda p: tried[p]["texts_per_second"])
    accuracy = {k: v for k, v in tried[precision].items() if k != "texts_per_second"}
    return {"precision": precision, "accuracy": accuracy, "tried": tried, "measured_on": workload(typical)}


def quantize_int8(
    spec: ModelSpec,
    fp32_model: Path,
    reference: np.ndarray,
    probe: list[Batch],
    folder: Path,
    *,
    calibration: list[Batch],
) -> dict[str, Any]:
    """NNCF post-training int8 quantization, calibrated on `calibration`; measured against fp32 on `probe`.

    SmoothQuant moves activation outliers into the weights; how far (alpha) trades
    long texts against very short ones. The alpha used had the best worst case of those
    tried (docs/benchmarks.md, the int8 calibration table). The measured agreement is
    recorded with the artifact for every model.
    """
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    started = time.perf_counter()
    model = ov.Core().read_model(str(fp32_model))
    names = {port.any_name for port in model.inputs}
    samples = [
        graph_feed(names, *(array[row : row + 1, : int(batch[1][row].sum())] for array in batch))
        for batch in calibration
        for row in range(len(batch[0]))
    ]
    with _first_graph.building(int8=True):  # NNCF's statistics run OpenVINO graphs too
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(samples),
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=0.6)
            ),
        )
    ov.save_model(quantized, str(folder / INT8_FILE))
    precision = cpu_precisions()[0]
    int8 = OpenVinoRuntime(spec, folder / INT8_FILE, precision=precision)
    accuracy = {"reference": "onnx fp32", **agreement(spec, reference, embed_all(int8, probe))}
    log.info(
        "quantized '%s' to OpenVINO int8 in %.1fs: %s", spec.name, time.perf_counter() - started, accuracy
    )
    return {"format": INT8_FORMAT, "file": INT8_FILE, "precision": precision, "accuracy": accuracy}
