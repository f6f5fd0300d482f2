"""A model's outputs beyond its pooled vector, computed in NumPy from the one runtime call.

The runtime runs the model once per call (runtimes/base.py `outputs`); every output a
request asked for comes from that same array, so a bge-m3-shaped model answers dense,
sparse and multi-vector requests from one forward pass:

- dense: the pooled (maybe normalised) vector, runtimes/heads.py `rows`.
- sparse: a SPLADE model's vocabulary-sized row (pooled inside its masked-LM head, so the
  exported graph never returns the whole [tokens × vocabulary] logits), or bge-m3's
  `sparse_linear.pt` over the hidden states (outputs/sparse.py).
- multivector: bge-m3's `colbert_linear.pt` over the hidden states, or a PyLate ColBERT
  model's Dense projections over them (outputs/multivector.py).

Which outputs a model has is the catalog's to say (catalog/spec.py `outputs`); the head
weights are read from the model's own directory, once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.outputs import multivector, sparse
from keepwarm.outputs.sparse import SparseVector
from keepwarm.runtimes.heads import rows

DENSE, SPARSE, MULTIVECTOR = "dense", "sparse", "multivector"


@dataclass(frozen=True)
class RowOutputs:
    """What one input gets from a model call: each asked-for output, None where not asked."""

    dense: np.ndarray | None = None
    sparse: SparseVector | None = None
    multivector: np.ndarray | None = None


def _linear(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, bias) of a saved torch.nn.Linear state dict, as float32 arrays."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    bias = state.get("bias")
    return state["weight"].float().numpy(), None if bias is None else bias.float().numpy()


def _dense_module(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(weight, bias) of a sentence-transformers Dense module's `linear`, from safetensors or a state dict."""
    import torch

    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    else:
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    bias = state.get("linear.bias")
    return state["linear.weight"].float().numpy(), None if bias is None else bias.float().numpy()


def _bias(bias: np.ndarray | None) -> np.ndarray:
    return np.zeros(1, dtype=np.float32) if bias is None else bias


def _special_ids(directory: Path) -> np.ndarray:
    """The tokenizer's special token ids (CLS, EOS, padding, unknown, ...), from tokenizer.json."""
    added = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
    return np.array(sorted(token["id"] for token in added if token.get("special")), dtype=np.int64)


class OutputHeads:
    """Computes the outputs a model call was asked for (see the module docs)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @cached_property
    def _sparse_linear(self) -> tuple[np.ndarray, np.ndarray | None]:
        return _linear(self.spec.directory / "sparse_linear.pt")

    @cached_property
    def _colbert_linear(self) -> tuple[np.ndarray, np.ndarray | None]:
        return _linear(self.spec.directory / "colbert_linear.pt")

    @cached_property
    def _projections(self) -> list[multivector.Projection]:
        """A PyLate model's Dense modules, in order."""
        assert self.spec.colbert is not None
        return [
            (*_dense_module(self.spec.directory / layer.path), layer.activation)
            for layer in self.spec.colbert.dense
        ]

    @cached_property
    def _special_ids(self) -> np.ndarray:
        return _special_ids(self.spec.directory)

    def compute(
        self,
        raw: np.ndarray,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        wanted: frozenset[str],
        keep: np.ndarray | None = None,
    ) -> list[RowOutputs]:
        """Each row's asked-for outputs from the runtime's output `raw` for these inputs.

        `keep`: the token vectors a ColBERT model answers (engine/colbert.py); else its attended tokens.
        """
        count = len(input_ids)
        dense = rows(self.spec, raw, attention_mask) if DENSE in wanted or self._sparse_is_row else None
        sparse_rows: list[SparseVector | None] = [None] * count
        if SPARSE in wanted:
            sparse_rows = self._sparse(raw, dense, input_ids, attention_mask)
        multi: list[np.ndarray | None] = [None] * count
        if MULTIVECTOR in wanted and self.spec.colbert is not None:
            kept = attention_mask.astype(bool) if keep is None else keep
            multi = list(multivector.pylate(raw, kept, self._projections))
        elif MULTIVECTOR in wanted:
            weight, bias = self._colbert_linear
            multi = list(multivector.bge_m3(raw, attention_mask, weight, bias))
        return [
            RowOutputs(
                dense[row] if dense is not None and DENSE in wanted else None, sparse_rows[row], multi[row]
            )
            for row in range(count)
        ]

    @property
    def _sparse_is_row(self) -> bool:
        """A SPLADE row is its sparse vector (pooled in the head); bge-m3 has a linear sparse head."""
        return self.spec.head == "masked-lm"

    def _sparse(
        self, raw: np.ndarray, dense: np.ndarray | None, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> list[SparseVector | None]:
        if self._sparse_is_row:
            assert dense is not None
            return [sparse.from_dense(row) for row in dense]
        weight, bias = self._sparse_linear
        return list(sparse.bge_m3(raw, input_ids, attention_mask, weight, _bias(bias), self._special_ids))
