"""PyTorch: the reference runtime (and the source every ONNX export is checked against)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel
from transformers.utils import logging as transformers_logging

from keepwarm.catalog.spec import ModelSpec
from keepwarm.errors import ConfigError
from keepwarm.runtimes.base import Runtime

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_transformer(spec: ModelSpec) -> torch.nn.Module:
    """The model's transformer in float32 eval mode, as sentence-transformers loads it."""
    transformers_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(spec.directory), dtype=torch.float32)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # decoders: embeddings never need a KV cache
    return model.eval()


def check_cuda() -> None:
    """Raise a clear error where CUDA was asked for but torch cannot use a GPU."""
    if not torch.cuda.is_available():
        raise ConfigError("key 'device': cuda was requested but torch sees no CUDA GPU on this machine")


class TorchRuntime(Runtime):
    """Runs the Hugging Face model directly with torch, in the spec's dtype and device."""

    name = "torch"

    def __init__(self, spec: ModelSpec, *, threads: int | None = None, dtype: str = "fp32") -> None:
        super().__init__(spec)
        if threads:
            torch.set_num_threads(threads)
        if spec.device == "cuda":
            check_cuda()
        self.device = torch.device(spec.device)
        self.model = load_transformer(spec).to(self.device)
        self.set_dtype(dtype)

    def set_dtype(self, dtype: str) -> None:
        """Cast the weights (fp32 → fp16/bf16) in place."""
        self.dtype = dtype
        self.model.to(_TORCH_DTYPES[dtype])

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            )
        return output.last_hidden_state.float().cpu().numpy()
