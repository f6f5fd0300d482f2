"""`keepwarm bench-batches`: online latency and job throughput with and without a batch job."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keepwarm.cli.options import DATA_DIR_OPTION

# no embedding cache (the figures are compute) and a checkpoint every 16 batch inputs
_SERVE_ARGS = ("--log-level", "warning", "--batch-chunk-inputs", "16", "--cache-mb", "0")


@click.command("bench-batches")
@click.option(
    "--corpus",
    "corpus_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="JSONL with a `text` field: short texts become online queries, all become job documents. "
    "Default: the built-in corpus (code and prose from Python's standard library).",
)
@click.option(
    "--rate", default=4.0, show_default=True, type=click.FloatRange(0.1), help="Online requests per second."
)
@click.option(
    "--seconds", default=20.0, show_default=True, type=click.FloatRange(1), help="Length of each phase."
)
@click.option("--model", default="all-minilm-l6-v2", show_default=True)
@click.option(
    "--serve-option", "serve_options", multiple=True, help="Extra `keepwarm serve` argument. Repeatable."
)
@DATA_DIR_OPTION
def bench_batches(
    corpus_path: Path | None,
    rate: float,
    seconds: float,
    model: str,
    serve_options: tuple[str, ...],
    data_dir: Path,
) -> None:
    """Start a server and measure online latency idle vs during a batch job, and the job's throughput."""
    from keepwarm.bench.batches import Plan, run
    from keepwarm.bench.corpus import CorpusError, corpus_texts
    from keepwarm.bench.process import ServerFailed, ServerProcess

    try:
        texts, source = corpus_texts(corpus_path)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from None
    queries = [text for text in texts if len(text.split()) <= 16][:500]
    try:
        with ServerProcess(data_dir, (*_SERVE_ARGS, *serve_options)) as server:
            plan = Plan(
                url=f"{server.url}/v1",
                model=model,
                queries=queries,
                documents=texts * 4,
                rate=rate,
                seconds=seconds,
            )
            report = run(plan)
    except ServerFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"corpus": source, **report}, indent=1))
