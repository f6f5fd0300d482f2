"""Model versions: one fingerprint for everything that decides what a vector means.

Two servings of a model share a version exactly when they produce interchangeable
vectors: the same weight and tokenizer files, and the same vector-shaping settings.
Anything else (a name, an alias, queue limits) leaves the version alone.
"""

from __future__ import annotations

import hashlib
import json

from keepwarm.catalog.spec import ModelSpec

SHORT_LENGTH = 12


def vector_settings(spec: ModelSpec) -> dict[str, object]:
    """The settings of `spec` that change the vectors it produces.

    fp32 on any runtime gives fp32-equivalent vectors (every runtime is checked against
    PyTorch), so the runtime only counts for reduced precision, where each rounds
    differently. `auto` records its measured choice beside the artifact, so it stays put.
    """
    settings: dict[str, object] = {
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "max_tokens": spec.max_tokens,
        "overflow": spec.overflow,
        "prompts": spec.prompts,
        "default_prompt": spec.default_prompt,
        "precision": "fp32" if spec.dtype == "fp32" else f"{spec.runtime}-{spec.dtype}",
    }
    if spec.task != "embed":  # what a score means (embedding models keep their versions)
        settings |= {
            "task": spec.task,
            "head": spec.head,
            "labels": list(spec.labels),
            "activation": spec.activation,
            "rerank_template": spec.rerank_template,
            "score_token_ids": list(spec.score_token_ids),
        }
    if spec.outputs != ("dense",):  # each output is part of the version; dense-only versions are unchanged
        settings["outputs"] = list(spec.outputs)
        if spec.head == "masked-lm":
            settings["splade"] = list(spec.splade)
        if spec.colbert is not None:  # markers, lengths, expansion, skiplist and projections
            settings["colbert"] = spec.colbert.settings()
    return settings


def model_version(spec: ModelSpec, files_fingerprint: str) -> str:
    """Full version: SHA-256 over the model files' fingerprint and the vector settings."""
    settings = json.dumps(vector_settings(spec), sort_keys=True)
    return hashlib.sha256(f"{files_fingerprint}\n{settings}".encode()).hexdigest()


def short_version(version: str) -> str:
    """The 12-hex-character form shown to users."""
    return version[:SHORT_LENGTH]


def version_label(name: str, version: str) -> str:
    """`name@short version`: how logs, metrics and reports name one model version."""
    return f"{name}@{short_version(version)}"


def split_pin(model: str) -> tuple[str, str | None]:
    """`name@version` → (name, version); a bare name → (name, None)."""
    name, sep, version = model.partition("@")
    return name, (version.lower() if sep else None)


def matches(version: str, pin: str) -> bool:
    """True when `pin` is this full version or its 12-character short form."""
    return pin in (version, short_version(version))
