"""PyTorch: the reference runtime (and the source every ONNX export is checked against)."""

from __future__ import annotations

import numpy as np
import torch

from keepwarm.catalog.spec import ModelSpec
from keepwarm.errors import ConfigError
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.heads import head_module, load_head, output_size, takes_token_types

_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_transformer(spec: ModelSpec) -> torch.nn.Module:
    """The model under its head (runtimes/heads.py), float32, eval mode, as sentence-transformers loads it."""
    return head_module(spec, load_head(spec))


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
        self._token_types = takes_token_types(spec, self.model.config)
        self.set_dtype(dtype)

    def set_dtype(self, dtype: str) -> None:
        """Cast the weights (fp32 → fp16/bf16) in place."""
        self.dtype = dtype
        self.model.to(_TORCH_DTYPES[dtype])

    @property
    def dimensions(self) -> int:
        return output_size(self.spec, self.model.config)

    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        segments = None
        if self._token_types:
            segments = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            segments = torch.from_numpy(segments).to(self.device)
        with torch.inference_mode():
            output = self.model(
                torch.from_numpy(input_ids).to(self.device),
                torch.from_numpy(attention_mask).to(self.device),
                segments,
            )
        return output.float().cpu().numpy()
