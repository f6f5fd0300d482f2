"""`keepwarm models` and `keepwarm export`: inspect the catalog and build artifacts ahead of time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from keepwarm.catalog import ModelSpec
from keepwarm.cli.options import (
    CONFIG_OPTIONS,
    DATA_DIR_OPTION,
    engine_for,
    model_specs,
    retrieval_size_options,
)
from keepwarm.errors import ConfigError


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
    columns = (
        "name",
        "architecture",
        "runtime",
        "dtype",
        "dimensions",
        "max_tokens",
        "pooling",
        "prompts",
        "source",
    )
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
        click.echo(
            json.dumps(
                {
                    "model": model.spec.name,
                    "version": model.short_version,
                    "runtime": model.runtime.name,
                    "dtype": model.opened.dtype,
                    "accuracy": model.opened.accuracy,
                    "artifact": model.opened.artifact,
                },
                indent=2,
            )
        )
    finally:
        engine.close()


@models.command()
@click.argument("first")
@click.argument("second")
@CONFIG_OPTIONS
@DATA_DIR_OPTION
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSONL file with a `text` field to compare on (default: keepwarm's probe texts).",
)
@click.option(
    "--dataset",
    "dataset_spec",
    default="docs",
    show_default=True,
    metavar="NAME|DIR",
    help="Retrieval set for the quality delta: a built-in set or a BEIR folder.",
)
@retrieval_size_options
@click.option("--no-quality", is_flag=True, help="Compare vectors only, without the retrieval evaluation.")
def diff(
    first: str,
    second: str,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
    corpus: Path | None,
    dataset_spec: str,
    queries: int,
    documents: int,
    no_quality: bool,
) -> None:
    """Embed the same texts with FIRST and SECOND (names or name@version) and say if they are interchangeable.

    Also reports both versions' nDCG@10 on a retrieval set: whether the change is worth re-embedding for.
    """
    from keepwarm.bench.corpus import CorpusError, load_corpus
    from keepwarm.datasets.retrieval import DatasetError
    from keepwarm.evaluation import open_dataset
    from keepwarm.reembed.diff import diff_versions
    from keepwarm.runtimes.probe import PROBE_TEXTS

    try:
        texts = load_corpus(corpus) if corpus else list(PROBE_TEXTS)
        dataset = None if no_quality else open_dataset(dataset_spec, queries=queries, documents=documents)
    except (CorpusError, DatasetError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        engine = engine_for([first, second], config, model_options, data_dir)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        report = asyncio.run(diff_versions(engine, first, second, texts)).report()
        if dataset is not None:
            report["quality"] = quality = _quality_delta(engine, first, second, dataset)
            report["advice"] += f"; {quality['verdict']}"
        click.echo(json.dumps(report, indent=2))
    finally:
        engine.close()


def _quality_delta(engine, first: str, second: str, dataset) -> dict[str, object]:  # noqa: ANN001
    """nDCG@10 of both versions on `dataset`, SECOND's gain, and whether it is more than noise.

    The gain is significant when it exceeds twice its standard error over the queries
    (paired: each query is scored by both versions).
    """
    from keepwarm.evaluation import EngineEmbedder, Target, dense_quality, paired_change

    a, b = (dense_quality(EngineEmbedder(engine, Target(ref)), dataset)["ndcg@10"] for ref in (first, second))
    delta, noise = paired_change(a, b)
    change = f"on {dataset.name} (nDCG@10 {delta:+.4f} ± {noise:.4f})"
    if abs(delta) <= noise:
        verdict = f"no significant retrieval change {change}"
    else:
        verdict = f"{second} retrieves {'better' if delta > 0 else 'worse'} than {first} {change}"
    return {
        "dataset": dataset.description,
        "metric": "ndcg@10",
        "first": round(float(a.mean()), 4),
        "second": round(float(b.mean()), 4),
        "delta": round(delta, 4),
        "delta_2se": round(noise, 4),
        "verdict": verdict,
    }
