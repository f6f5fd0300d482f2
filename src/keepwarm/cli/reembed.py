"""`keepwarm reembed`: embed a corpus into a versioned, resumable vector folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from keepwarm.cli.options import DATA_DIR_OPTION, engine_for, pricing_options
from keepwarm.errors import ConfigError, KeepwarmError


@click.command()
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--model",
    "model",
    required=True,
    metavar="NAME[@VERSION]",
    help="Model to embed with; NAME@VERSION refuses to run unless that version is served.",
)
@click.option(
    "--url",
    help="A running keepwarm server (e.g. http://127.0.0.1:8000/v1): embed through its Batch "
    "API at background priority. Default: embed in this process.",
)
@click.option("--api-key", envvar="OPENAI_API_KEY", help="API key for --url (env OPENAI_API_KEY).")
@click.option("--id-column", default="id", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["parquet", "numpy"]),
    default="parquet",
    show_default=True,
    help="Parquet parts, or NumPy .npy parts with ids in JSONL.",
)
@click.option(
    "--checkpoint-rows",
    default=4096,
    show_default=True,
    type=click.IntRange(1),
    help="Rows per committed part: an interruption loses at most this much work.",
)
@click.option(
    "--truncate/--no-truncate",
    default=True,
    show_default=True,
    help="Embed the first tokens of texts over the model's limit (as sentence-transformers does).",
)
@pricing_options
@click.option(
    "--add-model",
    "add_models",
    multiple=True,
    metavar="NAME=PATH",
    help="In-process: load this model (as `serve --model`). Repeatable.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="In-process: model catalog file.",
)
@DATA_DIR_OPTION
@click.option("--quiet", is_flag=True, help="No progress bar.")
def reembed(
    corpus_path: Path,
    output: Path,
    model: str,
    url: str | None,
    api_key: str | None,
    id_column: str,
    text_column: str,
    output_format: str,
    checkpoint_rows: int,
    truncate: bool,
    price_per_million_tokens: float,
    price_per_hour: float,
    add_models: tuple[str, ...],
    config: Path | None,
    data_dir: Path,
    quiet: bool,
) -> None:
    """Embed CORPUS (JSONL, CSV or Parquet with id and text columns) into the folder OUTPUT.

    Interrupted runs resume where they stopped; an OUTPUT holding another model version is refused.
    """
    from keepwarm.catalog.versions import split_pin
    from keepwarm.cost import Pricing, job_cost
    from keepwarm.reembed import Corpus, VectorDataset
    from keepwarm.reembed import reembed as run

    name = split_pin(model)[0]
    engine = None
    try:
        if url:
            from keepwarm.reembed import RemoteEmbedder

            embedder = RemoteEmbedder(url, model, truncate=truncate, api_key=api_key)
        else:
            engine = engine_for([model], config, add_models, data_dir)
            from keepwarm.reembed import LocalEmbedder

            embedder = LocalEmbedder(engine, model, truncate=truncate)
        dataset = VectorDataset.open(
            output,
            model=name,
            version=embedder.version,
            dimensions=embedder.dimensions,
            output_format=output_format,
        )
        report = run(
            Corpus(corpus_path, id_column, text_column),
            dataset,
            embedder,
            checkpoint_rows=checkpoint_rows,
            show_progress=not quiet,
        )
    except (ConfigError, KeepwarmError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if engine is not None:
            engine.close()
    summary = {
        "output": str(output),
        "model": name,
        "version": embedder.version,
        "rows": report.rows,
        "rows_already_done": report.skipped,
        "cost": job_cost(
            report.tokens,
            report.seconds,
            Pricing(per_million_tokens=price_per_million_tokens, per_hour=price_per_hour),
        ),
    }
    click.echo(json.dumps(summary), file=sys.stdout)
