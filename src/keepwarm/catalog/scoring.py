"""Rerankers and classifiers: what a scoring model is, read as sentence-transformers' `CrossEncoder` reads it.

- A `*ForSequenceClassification` architecture in `config.json` is a cross-encoder: it
  reads (query, document) pairs with segment ids and gives one logit per label. Its
  labels are `id2label`; its activation is the `activation_fn` of
  `config_sentence_transformers.json`, else `config.json`'s
  `sentence_transformers.activation_fn`, else the pre-v4 `sbert_ce_default_activation_function`
  (trusted only under `torch.`, as CrossEncoder does), else sigmoid for one label and
  identity for several. One label makes a reranker, several a classifier.
- A `*ForCausalLM` architecture is an embedding model unless the catalog says
  `task = "rerank"`: then it is a decoder reranker in the Qwen3-Reranker style. The
  catalog's `rerank_template` places `{query}` and `{document}` in the model's prompt, and
  the score is `logit(yes) - logit(no)` at the prompt's last token through a sigmoid, which
  is the probability of "yes" in a softmax over the two (sentence-transformers' `LogitScore`).

The catalog's `task` and `activation` override what the files say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keepwarm.errors import ConfigError

_ACTIVATIONS = {"Sigmoid": "sigmoid", "Softmax": "softmax", "Identity": "identity"}
_SCORING_KEYS = ("task", "activation", "rerank_template", "score_tokens")
DEFAULT_SCORE_TOKENS = ("yes", "no")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _architecture(config: dict[str, Any]) -> str:
    architectures = config.get("architectures") or [""]
    return str(architectures[0])


def _labels(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return tuple(str(id2label[key]) for key in sorted(id2label, key=int))
    count = int(config.get("num_labels", 2))  # transformers' default
    return tuple(f"LABEL_{i}" for i in range(count))


def _activation(directory: Path, config: dict[str, Any], labels: int) -> str:
    """The activation CrossEncoder.predict applies to this model's logits."""
    sources = (
        _read_json(directory / "config_sentence_transformers.json").get("activation_fn"),
        (config.get("sentence_transformers") or {}).get("activation_fn"),
        config.get("sbert_ce_default_activation_function"),
    )
    for path in sources:
        if isinstance(path, str) and path.startswith("torch."):  # CrossEncoder ignores other paths
            name = path.rsplit(".", 1)[-1]
            if name not in _ACTIVATIONS:
                raise ConfigError(
                    f"{directory}: activation function {path} is not one keepwarm applies "
                    f"({', '.join(_ACTIVATIONS)}); set key 'activation' in the catalog"
                )
            return _ACTIVATIONS[name]
    return "sigmoid" if labels == 1 else "identity"


def _token_ids(directory: Path, tokens: tuple[str, str]) -> tuple[int, ...]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    ids = tuple(tokenizer.token_to_id(token) for token in tokens)
    missing = [token for token, found in zip(tokens, ids, strict=True) if found is None]
    if missing:
        raise ConfigError(f"key 'score_tokens': the tokenizer has no token {missing[0]!r}")
    return ids  # type: ignore[return-value]


def _check_template(template: Any) -> str:
    if not isinstance(template, str) or template.count("{document}") != 1 or "{query}" not in template:
        raise ConfigError(
            "key 'rerank_template' must be a string holding {query} and {document} once, where the "
            "model's prompt puts them"
        )
    return template


def scoring_values(directory: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The spec values that make a model a reranker or classifier; pops the scoring keys from `overrides`."""
    given = {key: overrides.pop(key) for key in _SCORING_KEYS if key in overrides}
    config = _read_json(directory / "config.json")
    architecture = _architecture(config)
    if architecture.endswith("ForSequenceClassification"):
        return _cross_encoder(directory, config, given)
    task = given.get("task", "embed")
    if task == "embed":
        _refuse_unused({k: v for k, v in given.items() if k != "task"}, "an embedding model")
        return {}
    if task == "rerank" and architecture.endswith("ForCausalLM"):
        _refuse_unused({k: v for k, v in given.items() if k == "activation"}, "a decoder reranker")
        if "rerank_template" not in given:
            raise ConfigError(
                "key 'rerank_template' is required for a decoder reranker (the prompt around {query} "
                "and {document}; docs/catalog.md has Qwen3-Reranker's)"
            )
        return {
            "task": "rerank",
            "head": "causal-lm",
            "activation": "sigmoid",
            "rerank_template": _check_template(given["rerank_template"]),
            "score_token_ids": _token_ids(directory, given.get("score_tokens", DEFAULT_SCORE_TOKENS)),
        }
    raise ConfigError(
        f"key 'task': '{task}' needs a *ForSequenceClassification model (or, for rerank, a *ForCausalLM "
        f"one with a rerank_template); {directory} is {architecture or 'a model without architectures'}"
    )


def _cross_encoder(directory: Path, config: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    labels = _labels(config)
    task = given.get("task", "rerank" if len(labels) == 1 else "classify")
    decoder_keys = {k: v for k, v in given.items() if k in ("rerank_template", "score_tokens")}
    _refuse_unused(decoder_keys, "a cross-encoder")
    if task == "embed":
        return {}  # its encoder's pooled hidden states, as the catalog asks
    if task == "rerank" and len(labels) != 1:
        raise ConfigError(
            f"key 'task': rerank needs a model with one output label; this one has {len(labels)} "
            f'({", ".join(labels)}): serve it with task = "classify"'
        )
    return {
        "task": task,
        "head": "sequence-classification",
        "labels": labels,
        "activation": given.get("activation", _activation(directory, config, len(labels))),
    }


def _refuse_unused(given: dict[str, Any], kind: str) -> None:
    if given:
        raise ConfigError(f"key '{next(iter(given))}' does not apply to {kind}")
