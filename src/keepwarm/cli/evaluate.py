"""`keepwarm eval`: retrieval quality of served models side by side with their speed and cost."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from keepwarm.cli.options import (
    CONFIG_OPTIONS,
    DATA_DIR_OPTION,
    engine_for,
    model_entries,
    pricing_options,
    retrieval_size_options,
)
from keepwarm.datasets.builtin import BUILTIN
from keepwarm.errors import ConfigError, KeepwarmError

if TYPE_CHECKING:
    from keepwarm.evaluation import Embedder, Pipeline, Reranker, Target

PIPELINES = ("dense", "sparse", "multivector", "bm25", "hybrid", "rerank")
DEFAULT_PIPELINES = (
    "dense",
    "bm25",
    "hybrid",
)  # and sparse/multivector for such targets, rerank with --reranker
OUTPUT_PIPELINES = ("sparse", "multivector")  # pipelines of a target's other output (MODEL,output=...)


@click.command(name="eval")
@click.argument("targets", nargs=-1, metavar="[MODEL[,OPTION=VALUE]...]...")
@click.option(
    "--dataset",
    "dataset_specs",
    multiple=True,
    metavar="NAME|DIR|FILE",
    help=f"A built-in set ({', '.join(BUILTIN)}), a BEIR folder, or a pairs JSONL file (with --corpus). "
    "Repeatable. Default: both built-in sets.",
)
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The documents of pairs files: JSONL with `_id`, `text` and optionally `title`.",
)
@click.option(
    "--split", default="test", show_default=True, help="Which qrels/<split>.tsv of a BEIR folder to use."
)
@click.option(
    "--pipelines",
    help="Comma-separated: dense (each dense target), sparse (each MODEL,output=sparse target), "
    "multivector (each MODEL,output=multivector target), bm25, "
    "hybrid (each dense target fused with bm25, and with each sparse target), "
    "rerank (each dense target's top --rerank-depth rescored by --reranker). "
    "Default: dense,bm25,hybrid, with sparse/multivector for such targets and rerank with --reranker.",
)
@click.option("--reranker", metavar="MODEL", help="The reranker of the rerank pipeline (a served reranker).")
@click.option(
    "--rerank-depth",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Documents per query the reranker rescores.",
)
@retrieval_size_options
@click.option("--full", is_flag=True, help="Built-in sets at their full size (all queries and documents).")
@click.option(
    "--url", help="A running server (http://host:port, with or without /v1). Default: models in-process."
)
@click.option("--api-key", envvar="OPENAI_API_KEY", help="API key for --url (env OPENAI_API_KEY).")
@CONFIG_OPTIONS
@DATA_DIR_OPTION
@pricing_options
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as JSON.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw nDCG@10 against throughput to this image (PNG).",
)
@click.option(
    "--scratch-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Where corpus vectors are written while searching (default: the system's temp folder).",
)
def evaluate(
    targets: tuple[str, ...],
    dataset_specs: tuple[str, ...],
    corpus: Path | None,
    split: str,
    pipelines: str | None,
    reranker: str | None,
    rerank_depth: int,
    queries: int,
    documents: int,
    full: bool,
    url: str | None,
    api_key: str | None,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
    price_per_million_tokens: float,
    price_per_hour: float,
    json_path: Path | None,
    plot_path: Path | None,
    scratch_dir: Path | None,
) -> None:
    """Evaluate retrieval with each MODEL (name, alias or name@version; default: every configured model).

    Options after the name: `dimensions=N` cuts dense vectors, `dtype=int8|uint8|binary|ubinary`
    searches the model's compressed vectors, `output=sparse` its learned sparse vectors and
    `output=multivector` its token vectors (MaxSim).

    Reports nDCG@10, recall@10/@100 and MRR@10 with the documents per second of indexing,
    the p95 latency of one query and the cost per million tokens, measured in the same run.
    """
    from rich.console import Console

    from keepwarm.cost import Pricing
    from keepwarm.datasets.retrieval import DatasetError
    from keepwarm.evaluation import Target, dataset_summary, open_dataset, plot, results_table, run_evaluation

    try:
        parsed = [Target.parse(target) for target in targets]
        datasets = [
            open_dataset(
                spec,
                corpus=corpus,
                split=split,
                queries=None if full else queries,
                documents=None if full else documents,
            )
            for spec in dataset_specs or BUILTIN
        ]
    except (ValueError, DatasetError) as exc:
        raise click.UsageError(str(exc)) from None
    # sparse and multivector make rows only for such targets (a default target is one when its
    # model has no dense output), so by default they are on; asked for, they need such a target
    default = [*DEFAULT_PIPELINES, *OUTPUT_PIPELINES, *(["rerank"] if reranker else [])]
    kinds = _pipeline_kinds(pipelines) if pipelines else default
    if ("rerank" in kinds) != (reranker is not None):
        raise click.UsageError("the rerank pipeline and --reranker go together: give both or neither")
    for kind in OUTPUT_PIPELINES:
        if pipelines and kind in kinds and parsed and all(target.output != kind for target in parsed):
            raise click.UsageError(f"the {kind} pipeline needs a target MODEL,output={kind}")
    pricing = Pricing(per_million_tokens=price_per_million_tokens, per_hour=price_per_hour)
    try:
        with _models(parsed, kinds, reranker, url, api_key, config, model_options, data_dir) as (
            embedders,
            scorer,
        ):
            chosen = _pipelines(embedders, kinds, scorer, rerank_depth)
            rows = run_evaluation(
                datasets, chosen, pricing, scratch_dir, lambda step: click.echo(step, err=True)
            )
    except (ConfigError, KeepwarmError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    Console(width=200).print(results_table(rows))
    if json_path:
        report = {
            "datasets": [dataset_summary(d) for d in datasets],
            "pricing": dataclasses.asdict(pricing),
            "results": rows,
        }
        json_path.write_text(json.dumps(report, indent=2))
    if plot_path:
        plot(rows, plot_path)


def _pipeline_kinds(pipelines: str) -> list[str]:
    kinds = [kind.strip() for kind in pipelines.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(PIPELINES))
    if unknown or not kinds:
        raise click.BadParameter(
            f"unknown pipeline(s) {unknown}; choose from {', '.join(PIPELINES)}", param_hint="--pipelines"
        )
    return kinds


def _models(
    targets: list[Target],
    kinds: list[str],
    reranker: str | None,
    url: str | None,
    api_key: str | None,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
) -> contextlib.AbstractContextManager[tuple[list[Embedder], Reranker | None]]:
    """An embedder per target and the reranker, through `url` or in-process; none when nothing embeds."""
    if kinds == ["bm25"]:
        return contextlib.nullcontext(([], None))
    if url:
        return _server_models(targets, reranker, url, api_key)
    return _engine_models(targets, reranker, config, model_options, data_dir)


@contextlib.contextmanager
def _server_models(
    targets: list[Target], reranker: str | None, url: str, api_key: str | None
) -> Iterator[tuple[list[Embedder], Reranker | None]]:
    """Targets on a running server (default: every embedding model it lists), through the openai client."""
    import httpx
    import openai

    from keepwarm.evaluation import ServerEmbedder, ServerReranker, Target

    base = url.rstrip("/") if url.rstrip("/").endswith("/v1") else url.rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base, api_key=api_key or "unused", max_retries=5)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    scoring = httpx.Client(base_url=base + "/", headers=headers, timeout=300)
    try:
        served = client.models.list()
        targets = targets or [
            Target(model.id, output=_searched((model.model_extra or {}).get("outputs")))
            for model in served
            if (model.model_extra or {}).get("task", "embed") == "embed"
        ]
        scorer = ServerReranker(scoring, reranker) if reranker else None
        yield [ServerEmbedder(client, target) for target in targets], scorer
    except openai.APIError as exc:
        raise click.ClickException(f"{base}: {exc}") from None
    finally:
        client.close()
        scoring.close()


@contextlib.contextmanager
def _engine_models(
    targets: list[Target],
    reranker: str | None,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
) -> Iterator[tuple[list[Embedder], Reranker | None]]:
    """Targets in an in-process Engine (default: every configured embedding model), without a cache.

    Without the cache every corpus is really embedded, so the throughput is the model's.
    """
    from keepwarm.engine import EngineSettings
    from keepwarm.evaluation import EngineEmbedder, EngineReranker, Target

    entries = model_entries(config, model_options)
    specs = {e.name: e.to_spec() for e in entries}
    targets = targets or [
        Target(name, output=_searched(spec.outputs)) for name, spec in specs.items() if spec.task == "embed"
    ]
    wanted = [t.model for t in targets] + ([reranker] if reranker else [])
    engine = engine_for(wanted, config, model_options, data_dir, EngineSettings(cache_bytes=0))
    try:
        scorer = EngineReranker(engine, reranker) if reranker else None
        yield [EngineEmbedder(engine, target) for target in targets], scorer
    finally:
        engine.close()


def _searched(outputs: list[str] | tuple[str, ...] | None) -> str:
    """What a model is evaluated by when no target names it: dense, unless it has only sparse vectors."""
    return "sparse" if outputs and "dense" not in outputs and "sparse" in outputs else "dense"


def _pipelines(
    embedders: list[Embedder], kinds: list[str], reranker: Reranker | None, depth: int
) -> list[Pipeline]:
    """Dense and sparse per target, bm25 once, then fusions and reranks of those runs, as `kinds` asks.

    hybrid fuses each dense target with bm25 and with each sparse target; rerank rescores
    each dense target's run.
    """
    from keepwarm.evaluation import BM25, Dense, Hybrid, MultiVector, Rerank, Sparse

    dense = [Dense(e) for e in embedders if e.target.output == "dense"]
    sparse = [Sparse(e) for e in embedders if e.target.output == "sparse"]
    lexical = BM25()
    chosen: list[Pipeline] = list(dense) if "dense" in kinds else []
    chosen += sparse if "sparse" in kinds else []
    if "multivector" in kinds:
        chosen += [MultiVector(e) for e in embedders if e.target.output == "multivector"]
    chosen += [lexical] if "bm25" in kinds else []
    if "hybrid" in kinds:
        chosen += [Hybrid(pipeline, other) for pipeline in dense for other in [lexical, *sparse]]
    if reranker is not None:
        chosen += [Rerank(pipeline, reranker, depth) for pipeline in dense]
    return chosen
