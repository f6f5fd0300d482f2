"""The model catalog file: one `[[models]]` table per served model.

Every key is checked before anything loads, and a bad value is reported with the
model and the key it belongs to, so a typo never surfaces as a failure at request time.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keepwarm.catalog.sources import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SOURCE, resolve_source
from keepwarm.catalog.spec import POOLING_MODES, TOKEN_ID_INPUTS, ModelSpec, read_model_spec
from keepwarm.errors import ConfigError

# key -> (accepted python type, description used in error messages)
_OVERRIDE_KEYS: dict[str, tuple[type, str]] = {
    "pooling": (str, f"one of {', '.join(POOLING_MODES)}"),
    "normalize": (bool, "true or false"),
    "max_tokens": (int, "a positive integer"),
    "token_ids": (str, f"one of {', '.join(TOKEN_ID_INPUTS)}"),
}
_CHOICES = {"pooling": POOLING_MODES, "token_ids": TOKEN_ID_INPUTS}


@dataclass(frozen=True)
class ModelEntry:
    """One model as the user configured it, before its files are read."""

    name: str
    source: str
    aliases: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()

    def to_spec(self) -> ModelSpec:
        """Resolve the source and read the model's own files into a spec."""
        try:
            spec = read_model_spec(self.name, resolve_source(self.source), overrides=dict(self.overrides))
        except ConfigError as exc:
            raise ConfigError(f"model '{self.name}': {exc}") from None
        return ModelSpec(**{**spec.__dict__, "aliases": self.aliases})


DEFAULT_ENTRY = ModelEntry(name=DEFAULT_MODEL_NAME, source=DEFAULT_MODEL_SOURCE)


def _check_override(model: str, key: str, value: Any) -> Any:
    expected, description = _OVERRIDE_KEYS[key]
    type_ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not type_ok or (key in _CHOICES and value not in _CHOICES[key]) or (
        key == "max_tokens" and value < 1
    ):
        raise ConfigError(f"model '{model}': key '{key}' must be {description}, got {value!r}")
    return value


def _entry_from_table(position: int, table: Any) -> ModelEntry:
    if not isinstance(table, dict):
        raise ConfigError(f"models[{position}] must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not name or "@" in name:
        raise ConfigError(f"models[{position}]: key 'name' must be a non-empty string without '@'")
    source = table.get("source")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"model '{name}': key 'source' must be a directory or package name")
    aliases = table.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(f"model '{name}': key 'aliases' must be a list of names")
    unknown = set(table) - {"name", "source", "aliases", *_OVERRIDE_KEYS}
    if unknown:
        allowed = ", ".join(["name", "source", "aliases", *_OVERRIDE_KEYS])
        raise ConfigError(f"model '{name}': unknown key(s) {sorted(unknown)}; allowed: {allowed}")
    overrides = tuple(
        (key, _check_override(name, key, table[key])) for key in _OVERRIDE_KEYS if key in table
    )
    return ModelEntry(name=name, source=source, aliases=tuple(aliases), overrides=overrides)


def load_config(path: Path) -> list[ModelEntry]:
    """Read a catalog file into model entries, rejecting anything unclear."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    unknown = set(document) - {"models"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}")
    tables = document.get("models", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: expected at least one [[models]] table")
    return [_entry_from_table(i, t) for i, t in enumerate(tables)]


def parse_model_option(option: str) -> ModelEntry:
    """Parse the `--model NAME=PATH` command-line form."""
    name, sep, source = option.partition("=")
    if not sep or not name or not source or "@" in name:
        raise ConfigError(f"--model expects NAME=PATH, got {option!r}")
    return ModelEntry(name=name, source=source)


def check_unique_names(entries: list[ModelEntry]) -> None:
    """Refuse two models answering to the same name or alias."""
    seen: dict[str, str] = {}
    for entry in entries:
        for alias in (entry.name, *entry.aliases):
            if alias in seen:
                raise ConfigError(f"name '{alias}' is used by both '{seen[alias]}' and '{entry.name}'")
            seen[alias] = entry.name
