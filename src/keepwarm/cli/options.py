"""Options and helpers shared by several `keepwarm` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import platformdirs

from keepwarm.catalog import (
    DEFAULT_ENTRY,
    ModelEntry,
    ModelSpec,
    check_unique_names,
    load_config,
    parse_model_option,
)
from keepwarm.cost import Pricing
from keepwarm.errors import ConfigError

_PRICING = Pricing()  # the price options' defaults

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="KEEPWARM_DATA_DIR",
    default=lambda: platformdirs.user_data_dir("keepwarm"),
    show_default="per-user data directory",
    help="Where keepwarm keeps built artifacts and state (env KEEPWARM_DATA_DIR).",
)


DATABASE_OPTION = click.option(
    "--database",
    metavar="URL",
    envvar="KEEPWARM_DATABASE_URL",
    help="Keys, usage, limits, batches and the persistent cache in this database, e.g. "
    "postgresql://user@host/keepwarm, shared by every replica (env KEEPWARM_DATABASE_URL; "
    "default: SQLite files in the data directory).",
)


def retrieval_size_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--queries and --documents: how much of a built-in retrieval set to evaluate on."""
    from keepwarm.datasets.builtin import DEFAULT_DOCUMENTS, DEFAULT_QUERIES

    command = click.option(
        "--documents",
        type=click.IntRange(1),
        default=DEFAULT_DOCUMENTS,
        show_default=True,
        help="Documents of a built-in set (its queries' answers included).",
    )(command)
    return click.option(
        "--queries",
        type=click.IntRange(1),
        default=DEFAULT_QUERIES,
        show_default=True,
        help="Queries of a built-in set.",
    )(command)


def pricing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--price-per-million-tokens and --price-per-hour, for commands that report cost."""
    command = click.option(
        "--price-per-hour",
        type=click.FloatRange(0),
        default=_PRICING.per_hour,
        envvar="KEEPWARM_PRICE_PER_HOUR",
        show_default=True,
        help="Price of one hour of model compute time (env KEEPWARM_PRICE_PER_HOUR).",
    )(command)
    return click.option(
        "--price-per-million-tokens",
        type=click.FloatRange(0),
        default=_PRICING.per_million_tokens,
        envvar="KEEPWARM_PRICE_PER_MILLION_TOKENS",
        show_default=True,
        help="Price of one million embedded tokens (env KEEPWARM_PRICE_PER_MILLION_TOKENS).",
    )(command)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns, wide enough for their longest cell."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = (
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )
    return "\n".join(lines)


def open_database(data_dir: Path, url: str | None = None):  # noqa: ANN201 - keepwarm.store.Database, lazily
    """The database at `url`, else the state database in `data_dir`; a clean CLI error if it cannot open."""
    from keepwarm.store import Database, DatabaseUnavailable, StoreError

    where = _without_password(url) if url else f"in {data_dir}"
    try:
        return Database.open(url, data_dir)
    except (StoreError, OSError) as exc:
        raise click.ClickException(f"cannot open the state database {where}: {exc}") from None
    except DatabaseUnavailable as exc:
        reason = exc.__cause__.__cause__ or exc.__cause__  # the driver's own words
        raise click.ClickException(f"cannot reach the state database {where}: {reason}") from None


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: Database.open says so
        return url


def model_entries(config: Path | None, models: tuple[str, ...]) -> list[ModelEntry]:
    """The models to serve: from the config file and `--model` options, else the bundled one."""
    entries = load_config(config) if config else []
    entries += [parse_model_option(option) for option in models]
    entries = entries or [DEFAULT_ENTRY]
    check_unique_names(entries)
    return entries


def load_specs(config: Path | None, models: tuple[str, ...]) -> list[ModelSpec]:
    """The configured models' specs, devices checked; ConfigError names the model and key."""
    from keepwarm.runtimes.factory import check_device

    specs = [entry.to_spec() for entry in model_entries(config, models)]
    for spec in specs:
        try:
            check_device(spec)
        except ConfigError as exc:
            raise ConfigError(f"model '{spec.name}': {exc}") from None
    return specs


def model_specs(config: Path | None, models: tuple[str, ...]) -> list[ModelSpec]:
    """`load_specs` for a command line: a configuration problem becomes a usage error (exit 2)."""
    try:
        return load_specs(config, models)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def CONFIG_OPTIONS(command):  # noqa: ANN001, ANN201, N802 - a decorator, named like the options it adds
    """`--config FILE` and repeatable `--model NAME=PATH`, as `keepwarm serve` takes them."""
    command = click.option(
        "--model",
        "model_options",
        multiple=True,
        metavar="NAME=PATH",
        help="Serve the model in directory (or installed package) PATH as NAME. Repeatable. "
        "Default: the bundled all-minilm-l6-v2.",
    )(command)
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Model catalog TOML file.",
    )(command)


def specs_for(names: list[str], config: Path | None, models: tuple[str, ...]) -> list[ModelSpec]:
    """The specs of the models `names` refer to (names, aliases or pins), nothing loaded.

    Models come from `--config` and NAME=PATH options; the bundled model is always at hand.
    """
    from keepwarm.catalog.versions import split_pin

    specs = load_specs(config, models)
    if not any(spec.name == DEFAULT_ENTRY.name for spec in specs):
        specs.append(DEFAULT_ENTRY.to_spec())
    wanted = {split_pin(name)[0] for name in names}
    chosen = [spec for spec in specs if wanted & set(spec.names)]
    missing = wanted - {alias for spec in chosen for alias in spec.names}
    if missing:
        raise ConfigError(
            f"model(s) {sorted(missing)} not in the catalog; add them as NAME=PATH or with --config"
        )
    return chosen


def engine_for(  # noqa: ANN201
    names: list[str],
    config: Path | None,
    models: tuple[str, ...],
    data_dir: Path,
    settings=None,  # noqa: ANN001
):
    """An in-process Engine, loaded, with the models `names` refer to (see `specs_for`).

    `settings` (keepwarm.engine.EngineSettings) defaults to the engine's own.
    """
    from keepwarm.engine import Engine

    engine = Engine(specs_for(names, config, models), data_dir, settings)
    engine.load()
    return engine
