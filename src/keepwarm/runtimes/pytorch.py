"""PyTorch: the reference runtime (and the source every ONNX export is checked against)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel
from transformers.utils import logging as transformers_logging

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.base import Runtime


def load_transformer(spec: ModelSpec) -> torch.nn.Module:
    """The model's transformer in float32 eval mode, as sentence-transformers loads it."""
    transformers_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(spec.directory), dtype=torch.float32)
    return model.eval()


class TorchRuntime(Runtime):
    """Runs the Hugging Face model directly with torch."""

    name = "torch"

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        super().__init__(spec)
        if threads:
            torch.set_num_threads(threads)
        self.model = load_transformer(spec)

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output = self.model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
            )
        return output.last_hidden_state.float().numpy()
