"""The model catalog: what each served model is, where its files are, and its built artifacts."""

from keepwarm.catalog.artifacts import ArtifactStore
from keepwarm.catalog.config import (
    DEFAULT_ENTRY,
    ModelEntry,
    check_unique_names,
    load_config,
    parse_model_option,
)
from keepwarm.catalog.fingerprint import DigestCache, directory_fingerprint
from keepwarm.catalog.spec import ModelSpec, read_model_spec

__all__ = [
    "DEFAULT_ENTRY",
    "ArtifactStore",
    "DigestCache",
    "ModelEntry",
    "ModelSpec",
    "check_unique_names",
    "directory_fingerprint",
    "load_config",
    "parse_model_option",
    "read_model_spec",
]
