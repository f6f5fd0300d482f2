"""The contract every runtime fulfils: token ids in, one row per input out (a vector, or a head's logits)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.heads import rows

if TYPE_CHECKING:
    from keepwarm.outputs.heads import OutputHeads, RowOutputs


def graph_feed(
    names: set[str],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    token_type_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The inputs an exported graph declares, with zero segment ids where it reads them and none came."""
    feed = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    return {name: value for name, value in feed.items() if name in names}


class Runtime(ABC):
    """Runs one model under its head (runtimes/heads.py). Subclasses only run the graph; pooling is shared."""

    name: str = "runtime"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Length of the rows `embed` returns (vector size, labels, or score tokens)."""

    # True where `single_threaded_copy` works: then background work runs on low-priority copies
    single_threaded_copies: bool = False
    # True where the first call of each input shape prepares kernels for it (OpenVINO): only
    # then can rounding call widths, so that shapes repeat, pay (engine/tuning.py measures it)
    prepares_each_shape: bool = False

    def single_threaded_copy(self) -> Runtime:
        """Another instance of this model that computes on its caller's thread only."""
        raise NotImplementedError(f"{self.name} cannot make single-threaded copies")

    @abstractmethod
    def outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """The head's output as float32 for right-padded int64 inputs.

        Base head: last hidden states [batch, tokens, dim]; score heads: logits [batch, k].
        `token_type_ids` (segment ids of pairs) are used where the model reads them, zeros if not given.
        """

    def embed(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None = None,
        *,
        normalize: bool = True,
    ) -> np.ndarray:
        """One float32 row per input [batch, dimensions]: pooled (maybe normalised) vectors, or logits."""
        outputs = self.outputs(input_ids, attention_mask, token_type_ids)
        return rows(self.spec, outputs, attention_mask, normalize)

    @cached_property
    def _output_heads(self) -> OutputHeads:
        from keepwarm.outputs.heads import OutputHeads  # imports runtimes.heads, as this module does

        return OutputHeads(self.spec)

    def produce(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        wanted: frozenset[str],
        keep: np.ndarray | None = None,
    ) -> list[RowOutputs]:
        """The `wanted` outputs of each input (outputs/heads.py), all from this one model call.

        `keep` [rows, tokens]: which token vectors a ColBERT model answers (engine/colbert.py).
        """
        raw = self.outputs(input_ids, attention_mask)
        return self._output_heads.compute(raw, input_ids, attention_mask, wanted, keep)
