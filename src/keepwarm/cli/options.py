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
