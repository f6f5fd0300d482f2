"""ONNX Runtime: the default runtime. Importing this module never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from keepwarm.catalog.spec import ModelSpec
from keepwarm.errors import ConfigError
from keepwarm.machine import available_cores
from keepwarm.runtimes.base import Runtime, graph_feed


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """One inference at a time per model, using every core for it (lowest latency)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def providers(device: str) -> list[str]:
    """Execution providers for `device`, refusing cuda where this onnxruntime cannot use it."""
    if device != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(
            "key 'device': cuda was requested but this onnxruntime has no CUDA provider "
            "(install onnxruntime-gpu on a machine with an NVIDIA GPU)"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OnnxRuntime(Runtime):
    """Runs an exported graph whose inputs are input_ids, attention_mask and, for pairs, token_type_ids."""

    name = "onnx"

    def __init__(self, spec: ModelSpec, model_path: Path, *, threads: int | None = None) -> None:
        super().__init__(spec)
        self.model_path = model_path
        self.single_threaded_copies = spec.device != "cuda"
        self.session = ort.InferenceSession(
            str(model_path), sess_options=session_options(threads), providers=providers(spec.device)
        )
        self._output = self.session.get_outputs()[0]
        self._input_names = {i.name for i in self.session.get_inputs()}

    @property
    def dimensions(self) -> int:
        return int(self._output.shape[-1])

    def single_threaded_copy(self) -> OnnxRuntime:
        return OnnxRuntime(self.spec, self.model_path, threads=1)  # one intra-op thread: the caller's

    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        feed = graph_feed(self._input_names, input_ids, attention_mask, token_type_ids)
        return self.session.run([self._output.name], feed)[0]
