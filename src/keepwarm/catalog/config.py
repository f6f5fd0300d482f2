"""The model catalog file: one `[[models]]` table per served model.

Every key is checked before anything loads, and a bad value is reported with the
model and the key it belongs to, so a typo never surfaces as a failure at request time.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from keepwarm.catalog.sources import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SOURCE, resolve_source
from keepwarm.catalog.spec import (
    ACTIVATIONS,
    DEVICES,
    DTYPES,
    LOAD_POLICIES,
    OVERFLOWS,
    POOLING_MODES,
    RUNTIMES,
    TASKS,
    TOKEN_ID_INPUTS,
    ModelSpec,
    read_model_spec,
)
from keepwarm.errors import ConfigError

Check = Callable[[Any], Any]  # returns the normalised value, or raises ValueError


def _choice(options: tuple[str, ...]) -> tuple[Check, str]:
    def check(value: Any) -> Any:
        if value not in options:
            raise ValueError
        return value

    return check, f"one of {', '.join(options)}"


def _positive_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError
    return value


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError
    return float(value)


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError
    return value


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError
    return float(value)


def _prompts(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError
    return dict(value)


def _dims(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError
    return tuple(sorted({_positive_int(v) for v in value}))


def _token_pair(value: Any) -> tuple[str, str]:
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) and v for v in value):
        raise ValueError
    return (value[0], value[1])


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError
    return value


# key -> (check, description used in error messages); all override the model's own files
_OVERRIDE_KEYS: dict[str, tuple[Check, str]] = {
    "runtime": _choice(RUNTIMES),
    "dtype": _choice(DTYPES),
    "device": _choice(DEVICES),
    "pooling": _choice(POOLING_MODES),
    "normalize": (_boolean, "true or false"),
    "prompts": (_prompts, 'a table of prompt names to text, e.g. {query = "query: "}'),
    "default_prompt": (_text, "the name of one of the model's prompts"),
    "max_tokens": (_positive_int, "a positive integer"),
    "overflow": _choice(OVERFLOWS),
    "matryoshka_dims": (_dims, "a non-empty list of positive integers"),
    "token_ids": _choice(TOKEN_ID_INPUTS),
    "load": _choice(LOAD_POLICIES),
    "idle_timeout": (_non_negative_number, "a number of seconds >= 0 (0: never unload)"),
    # rerankers and classifiers (catalog/scoring.py)
    "task": _choice(TASKS),
    "activation": _choice(ACTIVATIONS),
    "rerank_template": (_text, "the prompt around {query} and {document}"),
    "score_tokens": (_token_pair, 'two tokens of the model\'s vocabulary, e.g. ["yes", "no"]'),
    # read by `keepwarm serve --ray` only
    "replicas": (_positive_int, "a positive integer"),
    "min_replicas": (_count, "an integer >= 0"),
    "max_replicas": (_positive_int, "a positive integer"),
    "target_ongoing_requests": (_positive_number, "a number > 0"),
    "replica_cpus": (_positive_number, "a number > 0"),
    "replica_gpus": (_non_negative_number, "a number >= 0"),
}
KNOWN_KEYS = ("name", "source", "aliases", "current", *_OVERRIDE_KEYS)


@dataclass(frozen=True)
class ModelEntry:
    """One model as the user configured it, before its files are read."""

    name: str
    source: str
    aliases: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()
    current: bool | None = None  # with several entries of one name: the version `name` means

    def to_spec(self) -> ModelSpec:
        """Resolve the source and read the model's own files into a spec."""
        try:
            spec = read_model_spec(self.name, resolve_source(self.source), overrides=dict(self.overrides))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"model '{self.name}': {exc}") from None
        return replace(spec, aliases=self.aliases, current=self.current is not False)


DEFAULT_ENTRY = ModelEntry(name=DEFAULT_MODEL_NAME, source=DEFAULT_MODEL_SOURCE)


def _check_override(model: str, key: str, value: Any) -> Any:
    check, description = _OVERRIDE_KEYS[key]
    try:
        return check(value)
    except ValueError:
        raise ConfigError(f"model '{model}': key '{key}' must be {description}, got {value!r}") from None


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
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a and "@" not in a for a in aliases):
        raise ConfigError(f"model '{name}': key 'aliases' must be a list of names without '@'")
    current = table.get("current")
    if current is not None and not isinstance(current, bool):
        raise ConfigError(f"model '{name}': key 'current' must be true or false")
    unknown = set(table) - set(KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"model '{name}': unknown key(s) {sorted(unknown)}; allowed: {', '.join(KNOWN_KEYS)}"
        )
    overrides = tuple((key, _check_override(name, key, table[key])) for key in _OVERRIDE_KEYS if key in table)
    return ModelEntry(name=name, source=source, aliases=tuple(aliases), overrides=overrides, current=current)


def load_config(path: Path) -> list[ModelEntry]:
    """Read a catalog file into model entries, rejecting anything unclear."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
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
    """Refuse ambiguity: a name or alias on two models, or several versions and no single current one.

    Several entries may share a `name`: they are versions of one model, all servable by
    pin (`name@version`), and the one marked `current = true` is what `name` means.
    """
    owner: dict[str, str] = {}
    versions: dict[str, list[ModelEntry]] = {}
    for entry in entries:
        versions.setdefault(entry.name, []).append(entry)
        for alias in (entry.name, *entry.aliases):
            if owner.setdefault(alias, entry.name) != entry.name:
                raise ConfigError(f"name '{alias}' is used by both '{owner[alias]}' and '{entry.name}'")
    for name, group in versions.items():
        current = [entry for entry in group if entry.current]
        if len(group) > 1 and len(current) != 1:
            raise ConfigError(
                f"model '{name}' is configured {len(group)} times (versions): mark exactly one with "
                f"current = true (found {len(current)})"
            )
        if len(group) == 1 and group[0].current is False:
            raise ConfigError(f"model '{name}': key 'current' is false, but it is the only version")
