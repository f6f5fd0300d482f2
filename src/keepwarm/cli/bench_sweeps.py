"""`keepwarm bench --plot DIR`: the sweeps mode of `keepwarm bench`, as one decorator.

With --plot, bench runs the sweeps (bench/sweeps.py) instead of its phases and draws
them (bench/plots.py); the bench options that mean the same thing (--config, --model,
--data-dir, --server-arg, --corpus, --seed, --texts-per-request, --max-seconds,
--price-per-hour, --json) keep their meaning. Kept apart from cli/bench.py so the
phases' options and the sweeps' options read each on their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from keepwarm.bench.sweeps import SweepOptions

_DEFAULTS = SweepOptions()
_PRICE_PER_HOUR = 0.09  # a 2-vCPU cloud VM, when --price-per-hour is not given


def _numbers(value: str | tuple[int, ...], allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, tuple):
        return value
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if any(number < 1 for number in numbers) or not (numbers or allow_empty):
        raise click.BadParameter("expected one or more values, each at least 1")
    return numbers


def _list_option(
    name: str, default: tuple[int, ...], what: str, allow_empty: bool = False
) -> Callable[..., Any]:
    return click.option(
        name,
        default=",".join(map(str, default)),
        show_default=True,
        callback=lambda _ctx, _param, value: _numbers(value, allow_empty),
        help=f"--plot: {what} (comma-separated).",
    )


_OPTIONS = (
    click.option(
        "--plot",
        "plot_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Run the sweeps instead of the phases and write their PNG plots (and sweeps.json) here.",
    ),
    _list_option("--sweep-clients", _DEFAULTS.clients, "concurrent clients of the clients sweep"),
    _list_option(
        "--sweep-lengths", _DEFAULTS.lengths, "tokens per text of the length sweep, up to the model's"
    ),
    _list_option("--sweep-batch-tokens", _DEFAULTS.batch_tokens, "--max-batch-tokens of each server started"),
    _list_option(
        "--sweep-long-lengths", _DEFAULTS.long_lengths, "tokens per text for the 8K model (empty: skip)", True
    ),
    click.option(
        "--sweep-texts",
        default=_DEFAULTS.texts,
        show_default=True,
        type=click.IntRange(1),
        help="--plot: texts per point (the clients sweep sends at least two requests per client).",
    ),
    click.option(
        "--sweep-long-texts",
        default=_DEFAULTS.long_texts,
        show_default=True,
        type=click.IntRange(1),
        help="--plot: texts per point of the 8K model.",
    ),
)
_NAMES = ("plot_dir", "sweep_clients", "sweep_lengths", "sweep_batch_tokens", "sweep_long_lengths")
_NAMES += ("sweep_texts", "sweep_long_texts")


def sweep_mode(command: Callable[..., None]) -> Callable[..., None]:
    """Add the --plot options to `command`; with --plot, run the sweeps instead of it."""

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        sweep = {name: kwargs.pop(name) for name in _NAMES}
        if sweep["plot_dir"] is None:
            return command(**kwargs)
        return _plot(sweep, kwargs)

    for option in reversed(_OPTIONS):
        run = option(run)
    return run


def _plot(sweep: dict[str, Any], bench: dict[str, Any]) -> None:
    import orjson
    from rich.console import Console

    from keepwarm.bench.client import LoadError
    from keepwarm.bench.corpus import CorpusError, corpus_texts, sample
    from keepwarm.bench.plots import write_plots
    from keepwarm.bench.process import ServerFailed
    from keepwarm.bench.sweeps import run_sweeps
    from keepwarm.bench.terminal import ProgressTracker
    from keepwarm.cli.options import model_entries
    from keepwarm.errors import ConfigError

    if bench["url"]:
        raise click.UsageError("--plot starts its own servers (one per --max-batch-tokens); drop --url")
    config = bench["config"]
    try:
        entries = model_entries(config, ())
        entry = next((e for e in entries if bench["model_name"] in (None, e.name, *e.aliases)), None)
        if entry is None:
            raise click.UsageError(f"--model {bench['model_name']!r} is not in the configured models")
        texts, _ = corpus_texts(bench["corpus"])
        spec = entry.to_spec()
    except (ConfigError, CorpusError) as exc:
        raise click.UsageError(str(exc)) from None
    options = SweepOptions(
        clients=sweep["sweep_clients"],
        lengths=sweep["sweep_lengths"],
        batch_tokens=sweep["sweep_batch_tokens"],
        long_lengths=sweep["sweep_long_lengths"],
        texts=sweep["sweep_texts"],
        long_texts=sweep["sweep_long_texts"],
        fixed_clients=bench["clients"],
        texts_per_request=bench["texts_per_request"],
        price_per_hour=bench["price_per_hour"] or _PRICE_PER_HOUR,
        max_seconds=bench["max_seconds"],
    )
    server_args = (("--config", str(config)) if config else ()) + bench["server_args"]
    console = Console(stderr=True)
    try:
        found = run_sweeps(
            spec,
            sample(texts, None, bench["seed"]),
            bench["data_dir"],
            server_args,
            options,
            ProgressTracker(console),
        )
    except (ServerFailed, LoadError) as exc:
        raise click.ClickException(str(exc)) from None
    directory: Path = sweep["plot_dir"]
    written = write_plots(found, directory)
    (directory / "sweeps.json").write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2))
    if bench["json_path"]:
        bench["json_path"].write_bytes(orjson.dumps(found, option=orjson.OPT_INDENT_2))
    for path in written:
        click.echo(str(path))
