"""`keepwarm adapter`: fit and measure a drift adapter between two model versions."""

from __future__ import annotations

import json
from pathlib import Path

import click

from keepwarm.adapter.linear import METHODS
from keepwarm.cli.options import DATA_DIR_OPTION, engine_for
from keepwarm.errors import ConfigError, KeepwarmError


@click.group()
def adapter() -> None:
    """Drift adapters: query an old index with a new model version during a re-index."""


@adapter.command()
@click.option(
    "--old", "old_model", required=True, metavar="NAME", help="The version the existing index was built with."
)
@click.option(
    "--new", "new_model", required=True, metavar="NAME", help="The version queries will be embedded with."
)
@click.option(
    "--corpus",
    "corpus_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Texts to sample from (JSONL, CSV or Parquet).",
)
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the adapter (safetensors).",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="lstsq",
    show_default=True,
    help="lstsq: any linear map (needs more fit texts than dimensions); procrustes: a rotation.",
)
@click.option("--fit-texts", default=2000, show_default=True, type=click.IntRange(2), help="Texts to fit on.")
@click.option(
    "--heldout-texts",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Other texts to measure retention on.",
)
@click.option("--seed", default=0, show_default=True, help="Sampling seed.")
@click.option("--url", help="A running keepwarm server serving both versions (through its Batch API).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="API key for --url (env OPENAI_API_KEY).")
@click.option(
    "--add-model", "add_models", multiple=True, metavar="NAME=PATH", help="In-process: load this model."
)
@click.option(
    "--config", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="In-process: catalog file."
)
@DATA_DIR_OPTION
def fit(
    old_model: str,
    new_model: str,
    corpus_path: Path,
    text_column: str,
    output: Path,
    method: str,
    fit_texts: int,
    heldout_texts: int,
    seed: int,
    url: str | None,
    api_key: str | None,
    add_models: tuple[str, ...],
    config: Path | None,
    data_dir: Path,
) -> None:
    """Embed a sample with both versions, fit a linear map new → old, and measure its retention."""
    from keepwarm.adapter import fit as fit_adapter
    from keepwarm.adapter import measure, retrieval_set, split
    from keepwarm.reembed import Corpus, LocalEmbedder, RemoteEmbedder

    engine = None
    try:
        fit_sample, heldout = split(
            list(Corpus(corpus_path, text_column=text_column).texts()), fit_texts, heldout_texts, seed
        )
        evaluation = retrieval_set(heldout)
        if url:
            old, new = (
                RemoteEmbedder(url, m, truncate=True, api_key=api_key) for m in (old_model, new_model)
            )
        else:
            engine = engine_for([old_model, new_model], config, add_models, data_dir)
            old, new = (LocalEmbedder(engine, m, truncate=True) for m in (old_model, new_model))
        texts = fit_sample + evaluation.documents + evaluation.queries
        old_vectors, new_vectors = old.embed(texts)[0], new.embed(texts)[0]
    except (ConfigError, KeepwarmError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if engine is not None:
            engine.close()
    fitted, documents = len(fit_sample), len(evaluation.documents)
    sections = (slice(0, fitted), slice(fitted, fitted + documents), slice(fitted + documents, None))
    provenance = {
        "method": method,
        "old_model": old_model,
        "old_version": old.version,
        "new_model": new_model,
        "new_version": new.version,
        "fit_texts": fitted,
        "seed": seed,
    }
    result = fit_adapter(new_vectors[sections[0]], old_vectors[sections[0]], method, provenance)
    metrics = measure(
        result,
        old_vectors[sections[1]],
        old_vectors[sections[2]],
        new_vectors[sections[1]],
        new_vectors[sections[2]],
    )
    result = type(result)(result.weight, {**result.metadata, "retention": json.dumps(metrics)})
    result.save(output)
    click.echo(json.dumps({"output": str(output), **provenance, **metrics}))


@adapter.command()
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--scale",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0),
    help="Noise, as a fraction of each weight matrix's standard deviation.",
)
@click.option("--seed", default=0, show_default=True)
def perturb(source: Path, target: Path, scale: float, seed: int) -> None:
    """Copy the model in SOURCE to TARGET with seeded noise on its weights: a stand-in new version."""
    from keepwarm.adapter import perturbed_copy

    try:
        perturbed_copy(source, target, scale=scale, seed=seed)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(target))
