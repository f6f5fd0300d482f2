"""ColBERT models in PyLate's layout: a Transformer, `Dense` projections and the query/document settings.

PyLate saves a ColBERT model as sentence-transformers files without a Pooling module:
`modules.json` lists the Transformer and one or more `Dense` modules (each folder holds
`config.json` with `in_features`, `out_features`, `bias`, `activation_function`, and the
weights as `linear.weight`/`linear.bias`), and `config_sentence_transformers.json` holds
the late-interaction settings: `query_prefix`/`document_prefix` (the marker tokens, such
as "[Q] " or "[unused0]"), `query_length`, `document_length`, `do_query_expansion`,
`attend_to_expansion_tokens` and `skiplist_words`. Settings the file leaves out take
PyLate's defaults, as `pylate.models.ColBERT` does when it loads the directory.

What the settings do is the engine's (engine/colbert.py) and the output head's
(outputs/multivector.py); here they are only read and checked.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from keepwarm.errors import ConfigError

# the activations a Dense module may name (its `activation_function`), as the head computes them
ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}
_COLBERT_KEYS = ("query_prefix", "document_prefix", "query_length", "document_length")
QUERY, DOCUMENT = "query", "document"
SIDES = (QUERY, DOCUMENT)  # what a request's input_type chooses between


@dataclass(frozen=True)
class DenseLayer:
    """One `Dense` module: its folder (relative to the model directory) and activation."""

    path: str
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a value of ACTIVATIONS


@dataclass(frozen=True)
class ColbertLayout:
    """A PyLate ColBERT model's settings (see the module docs); part of the model's version."""

    dense: tuple[DenseLayer, ...]
    query_prefix: str = "[Q] "
    document_prefix: str = "[D] "
    query_length: int = 32
    document_length: int = 180
    do_query_expansion: bool = True
    attend_to_expansion_tokens: bool = False
    skiplist_words: tuple[str, ...] = tuple(string.punctuation)

    def prefix(self, side: str) -> str:
        """The marker token of a side ("" for none)."""
        return self.query_prefix if side == QUERY else self.document_prefix

    def limit(self, side: str) -> int:
        """Tokens the tokenizer keeps for a side: its length, less one for the marker inserted after."""
        length = self.query_length if side == QUERY else self.document_length
        return length - 1 if self.prefix(side) else length

    @property
    def dimensions(self) -> int:
        """Size of each token vector: the last projection's output."""
        return self.dense[-1].out_features

    def settings(self) -> dict[str, Any]:
        """Everything that shapes the token vectors, as plain JSON values."""
        return asdict(self)


def is_colbert(modules: list[dict[str, Any]], st_config: dict[str, Any]) -> bool:
    """PyLate's layout: Dense modules and no Pooling, with ColBERT settings or model type."""
    types = [str(m.get("type", "")) for m in modules]
    has_dense = any(t.endswith(".Dense") for t in types)
    has_pooling = any(t.endswith(".Pooling") for t in types)
    named = st_config.get("model_type") == "ColBERT" or any(key in st_config for key in _COLBERT_KEYS)
    return has_dense and not has_pooling and named


def read_colbert(
    directory: Path,
    modules: list[dict[str, Any]],
    st_config: dict[str, Any],
    read_json: Callable[[Path], dict[str, Any]],
) -> ColbertLayout:
    """The layout of a PyLate model directory; ConfigError for what keepwarm cannot compute."""
    layers = tuple(
        _dense_layer(
            directory, str(m.get("path", "")), read_json(directory / str(m.get("path", "")) / "config.json")
        )
        for m in modules
        if str(m.get("type", "")).endswith(".Dense")
    )
    for before, after in zip(layers, layers[1:], strict=False):
        if before.out_features != after.in_features:
            raise ConfigError(
                f"{directory}: Dense {after.path} takes {after.in_features}, not {before.out_features}"
            )
    values: dict[str, Any] = {}
    for key in ("query_prefix", "document_prefix"):
        if isinstance(st_config.get(key), str):
            values[key] = st_config[key]
    for key in ("query_length", "document_length"):
        if st_config.get(key) is not None:
            values[key] = _positive(directory, key, st_config[key])
    for key in ("do_query_expansion", "attend_to_expansion_tokens"):
        if isinstance(st_config.get(key), bool):
            values[key] = st_config[key]
    if isinstance(st_config.get("skiplist_words"), list):
        values["skiplist_words"] = tuple(str(word) for word in st_config["skiplist_words"])
    layout = ColbertLayout(dense=layers, **values)
    if not layout.do_query_expansion:  # PyLate: without expansion nothing attends to expansion tokens
        layout = replace(layout, attend_to_expansion_tokens=False)
    return layout


def _dense_layer(directory: Path, path: str, config: dict[str, Any]) -> DenseLayer:
    name = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"{directory}: Dense {path} uses activation {name}; keepwarm computes {', '.join(ACTIVATIONS)}"
        )
    if config.get("use_residual"):
        raise ConfigError(
            f"{directory}: Dense {path} has use_residual = true, which keepwarm does not compute"
        )
    return DenseLayer(
        path=path,
        in_features=_positive(directory, "in_features", config.get("in_features")),
        out_features=_positive(directory, "out_features", config.get("out_features")),
        bias=bool(config.get("bias", True)),
        activation=ACTIVATIONS[name],
    )


def _positive(directory: Path, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{directory}: {key} must be a positive integer, got {value!r}")
    return value
