"""int8 ONNX artifacts: ONNX Runtime dynamic quantization, per output channel.

Per-tensor int8 was measured to lose too much on sentence encoders; per-channel weights
stay close to fp32 (docs/benchmarks.md, "int8 on ONNX Runtime").
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.accuracy import Batch, agreement, embed_all
from keepwarm.runtimes.ort import OnnxRuntime

log = logging.getLogger(__name__)

INT8_FORMAT = "onnx-int8-dynamic-per-channel-v1"
INT8_FILE = "model.int8.onnx"


def quantize_int8(
    spec: ModelSpec, fp32_model: Path, reference: np.ndarray, probe: list[Batch], folder: Path
) -> dict[str, Any]:
    """Write the int8 graph into `folder`, measure it against the fp32 `reference` vectors.

    Returns the artifact's metadata, with the measured agreement.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    quantize_dynamic(str(fp32_model), str(folder / INT8_FILE), per_channel=True, weight_type=QuantType.QInt8)
    int8 = OnnxRuntime(spec, folder / INT8_FILE)
    accuracy = {"reference": "onnx fp32", **agreement(spec, reference, embed_all(int8, probe))}
    log.info(
        "quantized '%s' to ONNX Runtime int8 in %.1fs: %s", spec.name, time.perf_counter() - started, accuracy
    )
    return {"format": INT8_FORMAT, "file": INT8_FILE, "accuracy": accuracy}
