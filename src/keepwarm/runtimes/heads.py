"""Which transformers head a model runs with, and what one row of its output is.

One model directory can be loaded under several heads, and the task decides which
(catalog/spec.py `head`): the bare encoder for embeddings (hidden states, pooled in
NumPy), `AutoModelForSequenceClassification` for cross-encoders and classifiers (one
logit per label), `AutoModelForCausalLM` for decoder rerankers (the logits of the spec's
score tokens at the last real token, so a call never carries the whole vocabulary),
`AutoModelForMaskedLM` for SPLADE sparse encoders (the logits pooled by SPLADE inside the
head, one vocabulary-sized row per input: outputs/sparse.py states the formula).

`HeadModule` is that choice as one torch module: the PyTorch runtime runs it and the
ONNX export traces it, so every runtime computes the same outputs from the same code.
A new head is one entry in `_AUTO_CLASSES`, one in `OUTPUT_NAMES` and a branch in
`HeadModule.forward`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.pooling import l2_normalize, pool

_AUTO_CLASSES = {
    "base": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
OUTPUT_NAMES = {
    "base": "last_hidden_state",
    "sequence-classification": "logits",
    "causal-lm": "score_logits",
    "masked-lm": "splade",
}


def load_head(spec: ModelSpec) -> Any:
    """The model under the spec's head, in float32 eval mode (a transformers PreTrainedModel)."""
    import torch
    import transformers
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    auto_class = getattr(transformers, _AUTO_CLASSES[spec.head])
    model = auto_class.from_pretrained(str(spec.directory), dtype=torch.float32)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # one forward pass per input: a KV cache is never reused
    return model.eval()


def takes_token_types(spec: ModelSpec, config: Any) -> bool:
    """Whether the model reads segment ids: a pair head whose encoder has more than one segment type."""
    return spec.pairs and int(getattr(config, "type_vocab_size", 1) or 1) > 1


def output_size(spec: ModelSpec, config: Any) -> int:
    """Values per row after `rows`: the hidden size, the number of labels, or the score tokens."""
    if spec.head == "sequence-classification":
        return int(config.num_labels)
    if spec.head == "causal-lm":
        return len(spec.score_token_ids)
    if spec.head == "masked-lm":
        return int(config.vocab_size)
    return int(config.hidden_size)


def rows(
    spec: ModelSpec, outputs: np.ndarray, attention_mask: np.ndarray, normalize: bool = True
) -> np.ndarray:
    """One float32 row per input: the pooled (maybe normalised) vector, or the head's logits as they are.

    `normalize=False` skips the model's Normalize module (TEI's `normalize: false`).
    """
    if spec.head != "base":
        return outputs.astype(np.float32, copy=False)
    vectors = pool(outputs, attention_mask, spec.pooling).astype(np.float32, copy=False)
    return l2_normalize(vectors) if spec.normalize and normalize else vectors


def _splade(logits: Any, attention_mask: Any, pooling: tuple[str, str]) -> Any:
    """sentence-transformers' SpladePooling: log1p(relu(masked logits)), max or sum over tokens.

    Inside the head, so the graph returns [batch, vocab] rather than every token's logits.
    """
    strategy, activation = pooling
    weights = (logits * attention_mask.unsqueeze(-1).to(logits.dtype)).relu().log1p()
    if activation == "log1p_relu":
        weights = weights.log1p()
    return weights.amax(dim=1) if strategy == "max" else weights.sum(dim=1)


def head_module(spec: ModelSpec, model: Any) -> Any:
    """`model` wrapped so its forward returns the head's output tensor (see HeadModule)."""
    import torch

    class HeadModule(torch.nn.Module):
        """input_ids, attention_mask (and token_type_ids for pair heads) -> the head's output."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.config = model.config
            if spec.head == "causal-lm":
                # only the score tokens' rows of the output embedding: [tokens, hidden]
                weight = model.get_output_embeddings().weight.detach()[list(spec.score_token_ids)]
                self.register_buffer("score_weight", weight.clone(), persistent=False)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            if spec.head == "base":
                return self.model(**inputs).last_hidden_state
            if spec.head == "sequence-classification":
                return self.model(**inputs).logits
            if spec.head == "masked-lm":
                return _splade(self.model(**inputs).logits, attention_mask, spec.splade)
            hidden = self.model.base_model(**inputs).last_hidden_state  # right-padded rows
            last = (attention_mask.sum(dim=1) - 1).clamp(min=0)
            final = torch.gather(hidden, 1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
            return final @ self.score_weight.T

    return HeadModule().eval()
