"""Options and helpers shared by several `keepwarm` commands."""

from __future__ import annotations

from pathlib import Path

import click
import platformdirs

from keepwarm.catalog import DEFAULT_ENTRY, ModelEntry, check_unique_names, load_config, parse_model_option

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KEEPWARM_DATA_DIR",
    default=lambda: platformdirs.user_data_dir("keepwarm"),
    show_default="per-user data directory",
    help="Where keepwarm keeps built artifacts and state (env KEEPWARM_DATA_DIR).",
)


def model_entries(config: Path | None, models: tuple[str, ...]) -> list[ModelEntry]:
    """The models to serve: from the config file and `--model` options, else the bundled one."""
    entries = load_config(config) if config else []
    entries += [parse_model_option(option) for option in models]
    entries = entries or [DEFAULT_ENTRY]
    check_unique_names(entries)
    return entries


def engine_for(names: list[str], config: Path | None, models: tuple[str, ...], data_dir: Path):  # noqa: ANN201
    """An in-process Engine, loaded, serving just the models called `names` (catalog, extras, bundled)."""
    from keepwarm.engine import Engine
    from keepwarm.errors import ConfigError

    entries = model_entries(config, models)
    if not any(DEFAULT_ENTRY.name in (entry.name, *entry.aliases) for entry in entries):
        entries.append(DEFAULT_ENTRY)  # the bundled model is always at hand in-process
    chosen = []
    for name in names:
        found = [entry for entry in entries if name in (entry.name, *entry.aliases)]
        if not found:
            raise ConfigError(f"model '{name}' is not in the catalog; add it with NAME=PATH or --config")
        chosen += [entry for entry in found if entry not in chosen]
    engine = Engine([entry.to_spec() for entry in chosen], data_dir)
    engine.load()
    return engine
