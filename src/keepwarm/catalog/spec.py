"""What a model means, read from its own files the way sentence-transformers reads them.

A `ModelSpec` is everything keepwarm needs to produce the same vectors as
`SentenceTransformer(model_dir).encode(...)`: pooling, normalisation and the maximum
sequence length. Values come from `modules.json`, `1_Pooling/config.json`,
`sentence_bert_config.json`, `config.json` and `tokenizer_config.json`; the user's
configuration may override them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from keepwarm.catalog.colbert import ColbertLayout, is_colbert, read_colbert
from keepwarm.catalog.scoring import scoring_values
from keepwarm.errors import ConfigError

Pooling = Literal["mean", "cls", "max", "lasttoken"]
TokenIdInput = Literal["cl100k", "model"]
RuntimeName = Literal["auto", "onnx", "torch", "openvino"]
DType = Literal["fp32", "fp16", "bf16", "int8"]
Device = Literal["cpu", "cuda"]
Overflow = Literal["error", "truncate", "chunk"]
LoadPolicy = Literal["eager", "lazy"]
Task = Literal["embed", "rerank", "classify"]
# which transformers head the model is loaded and exported with (runtimes/heads.py)
Head = Literal["base", "sequence-classification", "causal-lm", "masked-lm"]
Activation = Literal["sigmoid", "softmax", "identity"]
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max", "lasttoken")
TOKEN_ID_INPUTS: tuple[str, ...] = ("cl100k", "model")
RUNTIMES: tuple[str, ...] = ("auto", "onnx", "torch", "openvino")
DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
OVERFLOWS: tuple[str, ...] = ("error", "truncate", "chunk")
LOAD_POLICIES: tuple[str, ...] = ("eager", "lazy")
TASKS: tuple[str, ...] = ("embed", "rerank", "classify")
# what an embedding model can answer (outputs/heads.py): pooled vectors, sparse vectors, token vectors
OUTPUT_KINDS: tuple[str, ...] = ("dense", "sparse", "multivector")
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "softmax", "identity")

_ST_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class ModelSpec:
    """A model as served: its name, its files and every setting that shapes its vectors."""

    name: str
    directory: Path
    pooling: Pooling
    normalize: bool
    max_tokens: int
    token_ids: TokenIdInput = "cl100k"
    aliases: tuple[str, ...] = field(default=())
    runtime: RuntimeName = "auto"
    dtype: DType = "fp32"
    device: Device = "cpu"
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None
    overflow: Overflow = "error"
    matryoshka_dims: tuple[int, ...] = ()
    load: LoadPolicy = "eager"
    idle_timeout: float = 0.0
    current: bool = True  # the version the bare name resolves to
    # what the model serves, and the head it runs with (runtimes/heads.py)
    task: Task = "embed"
    head: Head = "base"
    labels: tuple[str, ...] = ()  # classifier label names, by output index
    activation: Activation = "identity"  # applied to a score head's logits, as CrossEncoder.predict does
    # causal-lm rerankers: the prompt around query and document, and the (yes, no) token ids it scores
    rerank_template: str | None = None
    score_token_ids: tuple[int, ...] = ()
    # the outputs this model answers (OUTPUT_KINDS), read from its files by _output_settings
    outputs: tuple[str, ...] = ("dense",)
    splade: tuple[str, str] = ("max", "relu")  # a SPLADE head's (pooling strategy, activation)
    colbert: ColbertLayout | None = None  # a PyLate ColBERT model's projections and query/document settings

    @property
    def pairs(self) -> bool:
        """True when inputs are (query, document) pairs with segment ids (a cross-encoder's head)."""
        return self.head == "sequence-classification"

    # how `keepwarm serve --ray` deploys this version (ignored in one process): see cluster/deployment.py
    replicas: int = 1
    min_replicas: int | None = None  # with max_replicas: autoscaling bounds instead of a fixed count
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        """The name and every alias this model answers to."""
        return (self.name, *self.aliases)

    def apply_prompt(self, text: str, prompt_name: str | None) -> str:
        """`text` with the named prompt (or the model's default) applied.

        A prompt is a prefix, as in sentence-transformers, or an instruction template
        holding `{text}` where the input goes.
        """
        name = prompt_name or self.default_prompt
        if name is None:
            return text
        prompt = self.prompts[name]
        return prompt.replace("{text}", text) if "{text}" in prompt else prompt + text


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _modules(directory: Path) -> list[dict[str, Any]]:
    path = directory / "modules.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def _pooling_from_modules(directory: Path, modules: list[dict[str, Any]]) -> Pooling:
    for module in modules:
        if str(module.get("type", "")).endswith(".Pooling"):
            config = _read_json(directory / str(module.get("path", "")) / "config.json")
            chosen = [mode for key, mode in _ST_POOLING_KEYS.items() if config.get(key)]
            if len(chosen) != 1:
                raise ConfigError(
                    f"{directory}: pooling config selects {chosen or 'no mode'}; "
                    "keepwarm supports exactly one of mean, cls, max, lasttoken"
                )
            return chosen[0]  # type: ignore[return-value]
    return "mean"  # what sentence-transformers uses for a plain transformers model


def _check_pooling_includes_prompt(directory: Path, modules: list[dict[str, Any]]) -> None:
    for module in modules:
        if str(module.get("type", "")).endswith(".Pooling"):
            config = _read_json(directory / str(module.get("path", "")) / "config.json")
            if config.get("include_prompt") is False:
                raise ConfigError(
                    f"{directory}: pooling excludes prompt tokens (include_prompt = false), "
                    "which keepwarm does not support yet; its vectors would not match the reference"
                )


def _unsupported_modules(modules: list[dict[str, Any]], colbert: bool) -> list[str]:
    known = (".Transformer", ".Pooling", ".Normalize", ".MLMTransformer", ".SpladePooling")
    known += (".Dense",) if colbert else ()  # a Dense projection is computed for ColBERT's token vectors only
    return [str(m.get("type")) for m in modules if not str(m.get("type", "")).endswith(known)]


def _output_settings(
    directory: Path, modules: list[dict[str, Any]], st_config: dict[str, Any]
) -> dict[str, Any]:
    """Which outputs the model's files give: SPLADE, PyLate's ColBERT, or bge-m3's extra heads.

    sentence-transformers' SparseEncoder layout (MLMTransformer + SpladePooling) runs under
    the masked-LM head and answers sparse vectors only; PyLate's ColBERT layout
    (catalog/colbert.py) answers token vectors only, truncating as PyLate does, with room
    for the longer side; bge-m3's `sparse_linear.pt` and `colbert_linear.pt` beside the
    dense model add sparse and multi-vector outputs.
    """
    if is_colbert(modules, st_config):
        layout = read_colbert(directory, modules, st_config, _read_json)
        longest = max(layout.limit("query"), layout.limit("document"))
        return {
            "outputs": ("multivector",),
            "colbert": layout,
            "max_tokens": longest,
            "overflow": "truncate",
            "normalize": False,
        }
    for module in modules:
        if str(module.get("type", "")).endswith(".SpladePooling"):
            config = _read_json(directory / str(module.get("path", "")) / "config.json")
            pooling = (
                str(config.get("pooling_strategy", "max")),
                str(config.get("activation_function", "relu")),
            )
            return {"head": "masked-lm", "outputs": ("sparse",), "splade": pooling, "normalize": False}
    extra = {"sparse": "sparse_linear.pt", "multivector": "colbert_linear.pt"}
    found = tuple(kind for kind, name in extra.items() if (directory / name).is_file())
    return {"outputs": ("dense", *found)} if found else {}


def _default_max_tokens(directory: Path) -> int:
    """sentence-transformers' rule: `max_seq_length`, else the tokenizer's and model's limit."""
    st_config = _read_json(directory / "sentence_bert_config.json")
    if isinstance(st_config.get("max_seq_length"), int):
        return int(st_config["max_seq_length"])
    limits = []
    model_max = _read_json(directory / "tokenizer_config.json").get("model_max_length")
    if isinstance(model_max, int) and model_max < 1_000_000:
        limits.append(model_max)
    positions = _read_json(directory / "config.json").get("max_position_embeddings")
    if isinstance(positions, int):
        limits.append(positions)
    return min(limits) if limits else 512


def read_model_spec(
    name: str,
    directory: Path,
    *,
    overrides: dict[str, Any] | None = None,
) -> ModelSpec:
    """Build the spec for the model in `directory`, applying the user's `overrides`."""
    if not (directory / "config.json").is_file():
        raise ConfigError(f"model '{name}': {directory} has no config.json")
    if not (directory / "tokenizer.json").is_file():
        raise ConfigError(f"model '{name}': {directory} has no tokenizer.json (a fast tokenizer is required)")
    overrides = dict(overrides or {})
    scoring = scoring_values(directory, overrides)  # takes the scoring keys out of `overrides`
    modules = [] if scoring else _modules(directory)  # a scoring model's modules are not pooling ones
    st_config = _read_json(directory / "config_sentence_transformers.json")
    unsupported = _unsupported_modules(modules, is_colbert(modules, st_config))
    if unsupported:
        raise ConfigError(f"model '{name}': unsupported sentence-transformers modules {unsupported}")
    _check_pooling_includes_prompt(directory, modules)
    prompts = st_config.get("prompts") if isinstance(st_config.get("prompts"), dict) else {}
    values: dict[str, Any] = {
        "pooling": _pooling_from_modules(directory, modules),
        "normalize": any(str(m.get("type", "")).endswith(".Normalize") for m in modules),
        "max_tokens": _default_max_tokens(directory),
        "prompts": {str(k): str(v) for k, v in prompts.items()},
        "default_prompt": st_config.get("default_prompt_name") or None,
        **_output_settings(directory, modules, st_config),
    }
    values.update(scoring)
    values.update(overrides)
    spec = ModelSpec(name=name, directory=directory, **values)
    _check_combination(spec)
    return spec


def _check_combination(spec: ModelSpec) -> None:
    """Refuse settings that cannot work together, saying which key to change."""
    if spec.default_prompt is not None and spec.default_prompt not in spec.prompts:
        raise ConfigError(
            f"key 'default_prompt': '{spec.default_prompt}' is not one of the prompts {sorted(spec.prompts)}"
        )
    if spec.dtype == "int8" and spec.runtime == "torch":
        raise ConfigError("key 'dtype': int8 needs runtime 'onnx', 'openvino' or 'auto' (not 'torch')")
    if spec.dtype in ("fp16", "bf16") and spec.runtime == "onnx":
        raise ConfigError(
            f"key 'dtype': {spec.dtype} needs runtime 'torch', 'openvino' or 'auto'; "
            "keepwarm's ONNX Runtime path is fp32/int8"
        )
    if spec.task == "classify" and spec.overflow == "chunk":
        raise ConfigError("key 'overflow': a classifier answers once per input; use 'error' or 'truncate'")
    _check_replicas(spec)
    if spec.device == "cuda" and spec.runtime == "openvino":
        raise ConfigError(
            "key 'device': runtime 'openvino' runs on the CPU here; use 'onnx' or 'torch' for cuda"
        )


def _check_replicas(spec: ModelSpec) -> None:
    if (spec.min_replicas is None) != (spec.max_replicas is None):
        raise ConfigError("keys 'min_replicas' and 'max_replicas' go together (autoscaling bounds)")
    if spec.min_replicas is None or spec.max_replicas is None:
        return
    if spec.min_replicas > spec.max_replicas:
        raise ConfigError(
            f"key 'min_replicas' ({spec.min_replicas}) is above 'max_replicas' ({spec.max_replicas})"
        )
    if spec.min_replicas == 0 and spec.load != "lazy":
        raise ConfigError("key 'min_replicas': 0 needs load = \"lazy\" (an eager model keeps a replica)")
