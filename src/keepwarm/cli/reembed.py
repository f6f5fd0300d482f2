"""`keepwarm reembed`: embed a corpus into a versioned, resumable vector folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from keepwarm.cli.options import DATA_DIR_OPTION, engine_for, pricing_options
from keepwarm.errors import ConfigError, KeepwarmError


@click.command()
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(exists=True, path_type=Path))
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
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Embed on Ray Data with a pool of engine actors: on the cluster whose head is at ADDRESS, "
    "or, without ADDRESS, on one started here. CORPUS may then be a folder of files (docs/scaling.md).",
)
@click.option(
    "--actors", default=2, show_default=True, type=click.IntRange(1), help="With --ray: engine actors."
)
@click.option(
    "--actor-cpus",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="With --ray: CPUs each engine actor reserves.",
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
    ray_address: str | None,
    actors: int,
    actor_cpus: float,
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
    if ray_address:
        if url or output_format != "parquet":
            raise click.UsageError(
                "--ray writes Parquet parts in this process's cluster; drop --url/--format"
            )
        report, shards, version = _on_ray(
            ray_address,
            corpus_path,
            output,
            model,
            config,
            add_models,
            data_dir,
            truncate=truncate,
            columns=(id_column, text_column),
            shard_rows=checkpoint_rows,
            actors=actors,
            actor_cpus=actor_cpus,
        )
        summary = {"output": str(output), "model": name, "version": version, "rows": report.rows}
        summary |= {"rows_already_done": report.skipped, "shards_done": shards}
        summary["tokens_per_second"] = round(report.tokens / max(report.seconds, 1e-9))
        click.echo(json.dumps(summary), file=sys.stdout)
        return
    if corpus_path.is_dir():
        raise click.UsageError("CORPUS is a folder: embed a folder of files with --ray")
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


def _on_ray(
    address: str,
    corpus_path: Path,
    output: Path,
    model: str,
    config: Path | None,
    add_models: tuple[str, ...],
    data_dir: Path,
    *,
    truncate: bool,
    columns: tuple[str, str],
    shard_rows: int,
    actors: int,
    actor_cpus: float,
):  # noqa: ANN202 - (RunReport, shards embedded, version)
    """`reembed --ray`: resolve the exact version here, then embed on Ray Data (reembed/distributed.py)."""
    from keepwarm.cli.options import specs_for
    from keepwarm.cluster import require_ray
    from keepwarm.engine import Engine

    try:
        require_ray()
        specs = specs_for([model], config, add_models)
        version = Engine(specs, data_dir).describe(model)[0].version  # nothing loads here
        from keepwarm.cluster.connection import join
        from keepwarm.reembed.distributed import Job, reembed_on_ray

        join(address)
        name = model.partition("@")[0]
        job = Job(specs, data_dir, f"{name}@{version}", version, truncate, *columns)
        report, shards = reembed_on_ray(
            corpus_path, output, job, shard_rows=shard_rows, actors=actors, actor_cpus=actor_cpus
        )
    except (ConfigError, KeepwarmError) as exc:
        raise click.ClickException(str(exc)) from None
    return report, shards, version
