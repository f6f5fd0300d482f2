"""`keepwarm models` and `keepwarm export`: inspect the catalog and build artifacts ahead of time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from keepwarm.catalog import ModelSpec
from keepwarm.cli.options import CONFIG_OPTIONS, DATA_DIR_OPTION, model_specs


def _describe(spec: ModelSpec) -> dict[str, object]:
    config = json.loads((spec.directory / "config.json").read_text())
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "source": str(spec.directory),
        "architecture": config.get("model_type", "?"),
        "runtime": spec.runtime,
        "dtype": spec.dtype,
        "device": spec.device,
        "dimensions": config.get("hidden_size"),
        "max_tokens": spec.max_tokens,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "overflow": spec.overflow,
        "prompts": spec.prompts,
        "load": spec.load,
    }


@click.group(name="models", invoke_without_command=True)
@CONFIG_OPTIONS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def models(ctx: click.Context, config: Path | None, model_options: tuple[str, ...], as_json: bool) -> None:
    """List the configured models (without loading them)."""
    if ctx.invoked_subcommand is not None:
        return
    described = [_describe(spec) for spec in model_specs(config, model_options)]
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    columns = ("name", "architecture", "runtime", "dtype", "dimensions", "max_tokens", "pooling", "prompts", "source")
    rows = [[_cell(d[c]) for c in columns] for d in described]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in ([c.upper() for c in columns], *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _cell(value: object) -> str:
    if isinstance(value, dict):
        return ",".join(value) or "-"
    return str(value)


@click.command()
@click.argument("name")
@CONFIG_OPTIONS
@DATA_DIR_OPTION
def export(name: str, config: Path | None, model_options: tuple[str, ...], data_dir: Path) -> None:
    """Build NAME's runtime artifact now (for images and CI) and print its measured accuracy."""
    from keepwarm.engine import Engine
    from keepwarm.logs import configure_logging

    configure_logging("info")
    specs = [spec for spec in model_specs(config, model_options) if name in spec.names]
    if not specs:
        raise click.UsageError(f"no configured model is called '{name}'")
    engine = Engine(specs, data_dir)
    try:
        engine.load() if specs[0].load == "eager" else engine.embed_sync(name, ["warm up"])
        model = engine.resolve(name)
        click.echo(json.dumps({
            "model": model.spec.name,
            "version": model.short_version,
            "runtime": model.runtime.name,
            "dtype": model.opened.dtype,
            "accuracy": model.opened.accuracy,
            "artifact": model.opened.artifact,
        }, indent=2))
    finally:
        engine.close()




@models.command()
@click.argument("first")
@click.argument("second")
@CONFIG_OPTIONS
@DATA_DIR_OPTION
@click.option("--corpus", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSONL file with a `text` field to compare on (default: keepwarm's probe texts).")
def diff(first: str, second: str, config: Path | None, model_options: tuple[str, ...], data_dir: Path,
         corpus: Path | None) -> None:
    """Embed the same texts with FIRST and SECOND (names or name@version) and say if they are interchangeable."""
    from keepwarm.bench.corpus import CorpusError, load_corpus
    from keepwarm.engine import Engine
    from keepwarm.reembed.diff import diff_versions
    from keepwarm.runtimes.probe import PROBE_TEXTS

    try:
        texts = load_corpus(corpus) if corpus else list(PROBE_TEXTS)
    except CorpusError as exc:
        raise click.UsageError(str(exc)) from None
    engine = Engine(model_specs(config, model_options), data_dir)
    try:
        click.echo(json.dumps(asyncio.run(diff_versions(engine, first, second, texts)).report(), indent=2))
    finally:
        engine.close()
