"""`keepwarm bench`: measure a keepwarm server against the same model in-process."""

from __future__ import annotations

from pathlib import Path

import click

from keepwarm.catalog import ModelEntry
from keepwarm.cli.bench_sweeps import sweep_mode
from keepwarm.cli.options import DATA_DIR_OPTION, model_entries
from keepwarm.errors import ConfigError


@click.command()
@sweep_mode
@click.option(
    "--url", help="Benchmark this running server instead of starting one (e.g. http://127.0.0.1:8000)."
)
@click.option(
    "--api-key",
    envvar="KEEPWARM_API_KEY",
    help="Bearer key for a server that requires one (env KEEPWARM_API_KEY).",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Model catalog TOML: passed to the server it starts, and used for the in-process baselines.",
)
@click.option("--model", "model_name", help="Which configured model to measure (default: the first).")
@DATA_DIR_OPTION
@click.option(
    "--server-arg",
    "server_args",
    multiple=True,
    metavar="ARG",
    help="Extra argument for the `keepwarm serve` it starts, e.g. --server-arg=--max-batch-tokens=4096. "
    "Repeatable.",
)
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL file with a 'text' field per line. Default: the built-in corpus (code and prose from "
    "Python's standard library).",
)
@click.option(
    "--texts",
    "text_count",
    default=1024,
    show_default=True,
    type=click.IntRange(0),
    help="Texts per throughput phase, a seeded sample of the corpus (0: all of it).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the sample's order.")
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(["closed", "bursts", "idle"]),
    help="Phases to run against the server (repeatable; default: all).",
)
@click.option(
    "--clients",
    default=16,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Closed loop: concurrent clients.",
)
@click.option(
    "--texts-per-request",
    default=8,
    show_default=True,
    type=click.IntRange(1, 2048),
    help="Closed loop and bursts: texts in each request.",
)
@click.option(
    "--burst",
    default=64,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Bursts: requests sent at once.",
)
@click.option(
    "--burst-gap",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Bursts: seconds of silence between bursts.",
)
@click.option(
    "--idle-requests",
    default=50,
    show_default=True,
    type=click.IntRange(1),
    help="Idle latency: requests, one at a time.",
)
@click.option(
    "--idle-text",
    default="What is the capital of France?",
    show_default=True,
    help="Idle latency: the short text sent.",
)
@click.option(
    "--texts-per-call",
    default=32,
    show_default=True,
    type=click.IntRange(1),
    help="In-process baselines: texts per model call, grouped by length.",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Run every phase this many times; report the best.",
)
@click.option(
    "--max-seconds",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Upper bound on each load phase.",
)
@click.option(
    "--sentence-transformers",
    "with_st",
    is_flag=True,
    help="Also measure sentence-transformers in-process (PyTorch).",
)
@click.option(
    "--price-per-hour",
    type=click.FloatRange(0, min_open=True),
    help="Machine price in USD/hour: report $ per million tokens.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results to this JSON file.",
)
@click.option(
    "--outputs",
    "outputs",
    default="dense",
    show_default=True,
    help="Outputs every request asks for, comma-separated, dense first: e.g. dense,sparse,multivector "
    "(a model with those heads; docs/dialects.md). In-process baselines compute the same.",
)
def bench(
    url: str | None,
    api_key: str | None,
    config: Path | None,
    model_name: str | None,
    data_dir: Path,
    server_args: tuple[str, ...],
    corpus: Path | None,
    text_count: int,
    seed: int,
    modes: tuple[str, ...],
    clients: int,
    texts_per_request: int,
    burst: int,
    burst_gap: float,
    idle_requests: int,
    idle_text: str,
    texts_per_call: int,
    repeat: int,
    max_seconds: float,
    with_st: bool,
    price_per_hour: float | None,
    json_path: Path | None,
    outputs: str,
) -> None:
    """Measure throughput and latency of a keepwarm server against the same model in-process.

    Unless --url is given, starts `keepwarm serve` on a free loopback port (with --config),
    then runs, in turn: the model in-process on the server's runtime (and on ONNX Runtime
    fp32 for reference), a closed loop of concurrent clients, bursts of requests, and
    single short requests at idle. The server and the load generator share this machine's
    cores: the report shows how much CPU the generator itself used.
    """
    import orjson
    from rich.console import Console

    from keepwarm.bench.client import LoadError
    from keepwarm.bench.corpus import CorpusError, corpus_texts, sample
    from keepwarm.bench.process import ServerFailed
    from keepwarm.bench.report import build_report
    from keepwarm.bench.runner import MODES, BenchOptions, run_benchmark
    from keepwarm.bench.terminal import ProgressTracker, render, report_console

    if url and server_args:
        raise click.UsageError(
            "--server-arg applies to the server bench starts; it cannot change the one at --url"
        )
    try:
        entries = model_entries(config, ())
        entry = next((e for e in entries if model_name in (None, e.name, *e.aliases)), None)
        if entry is None:
            raise click.UsageError(f"--model {model_name!r} is not in the configured models")
        all_texts, corpus_source = corpus_texts(corpus)
        texts = sample(all_texts, text_count or None, seed)
        if entry.to_spec().task == "rerank":
            _bench_rerank(
                entry,
                entries,
                texts,
                data_dir,
                url,
                api_key,
                config,
                server_args,
                clients,
                texts_per_request,
                texts_per_call,
                json_path,
            )
            return
        options = BenchOptions(
            spec=entry.to_spec(),
            texts=texts,
            data_dir=data_dir,
            url=url,
            api_key=api_key,
            server_args=(("--config", str(config)) if config else ()) + server_args,
            modes=modes or MODES,
            clients=clients,
            texts_per_request=texts_per_request,
            burst=burst,
            burst_gap=burst_gap,
            idle_text=idle_text,
            idle_requests=idle_requests,
            texts_per_call=texts_per_call,
            repeat=repeat,
            max_seconds=max_seconds,
            sentence_transformers=with_st,
            outputs=_outputs(outputs),
        )
    except (ConfigError, CorpusError) as exc:
        raise click.UsageError(str(exc)) from None
    console = Console(stderr=True)
    try:
        measured = run_benchmark(options, ProgressTracker(console))
    except (ServerFailed, LoadError) as exc:
        raise click.ClickException(str(exc)) from None
    report = build_report(measured, options, corpus_source, price_per_hour)
    render(report, report_console())
    if json_path:
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def _bench_rerank(
    entry: ModelEntry,
    entries: list[ModelEntry],
    texts: list[str],
    data_dir: Path,
    url: str | None,
    api_key: str | None,
    config: Path | None,
    server_args: tuple[str, ...],
    clients: int,
    per_request: int,
    per_call: int,
    json_path: Path | None,
) -> None:
    """A reranker's benchmark (bench/rerank.py): pairs/s in-process and through the server."""
    import orjson
    from rich.console import Console

    from keepwarm.bench.rerank import RerankLoad, queries_from, run_rerank_benchmark

    embedder = next((e for e in entries if e.to_spec().task == "embed"), None)
    load = RerankLoad(
        model=entry.name,
        queries=queries_from(texts),
        documents=texts,
        per_request=per_request,
        per_call=per_call,
        clients=clients,
        api_key=api_key,
        embed_model=embedder.name if embedder and config else None,
    )
    report = run_rerank_benchmark(
        entry.to_spec(),
        data_dir=data_dir,
        url=url,
        server_args=(("--config", str(config)) if config else ()) + server_args,
        load=load,
    )
    Console().print_json(orjson.dumps(report).decode())
    if json_path:
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def _outputs(value: str) -> tuple[str, ...]:
    """--outputs as a tuple: dense first (the baselines compare dense vectors), then known outputs."""
    from keepwarm.catalog.spec import OUTPUT_KINDS

    chosen = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not chosen or chosen[0] != "dense" or not set(chosen) <= set(OUTPUT_KINDS):
        raise click.UsageError(f"--outputs must start with dense and name only {', '.join(OUTPUT_KINDS)}")
    return chosen
