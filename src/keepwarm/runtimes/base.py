"""The contract every runtime fulfils: token ids in, one vector per text out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.pooling import l2_normalize, pool


class Runtime(ABC):
    """Runs one model. Subclasses only compute hidden states; pooling is shared."""

    name: str = "runtime"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Length of the vectors this model produces."""

    # True where `single_threaded_copy` works: then background work runs on low-priority copies
    single_threaded_copies: bool = False

    def single_threaded_copy(self) -> Runtime:
        """Another instance of this model that computes on its caller's thread only."""
        raise NotImplementedError(f"{self.name} cannot make single-threaded copies")

    @abstractmethod
    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Last hidden states [batch, tokens, dim] as float32 for right-padded int64 inputs."""

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pooled (and, if the model says so, normalised) float32 vectors [batch, dim]."""
        vectors = pool(self.hidden_states(input_ids, attention_mask), attention_mask, self.spec.pooling)
        vectors = vectors.astype(np.float32, copy=False)
        return l2_normalize(vectors) if self.spec.normalize else vectors
