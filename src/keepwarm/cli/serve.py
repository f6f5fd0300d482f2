"""`keepwarm serve`: run the HTTP service."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from keepwarm.cli.options import DATA_DIR_OPTION, model_entries
from keepwarm.errors import ConfigError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME=PATH",
    help="Serve the model in directory (or installed package) PATH as NAME. Repeatable. "
    "Default: the bundled all-minilm-l6-v2.",
)
@click.option("--config", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Model catalog TOML file.")
@DATA_DIR_OPTION
@click.option("--max-batch-tokens", default=8192, show_default=True, type=click.IntRange(1), help="Padded tokens per model call.")
@click.option("--max-batch-size", default=64, show_default=True, type=click.IntRange(1), help="Rows per model call.")
@click.option("--max-queue-tokens", default=600_000, show_default=True, type=click.IntRange(1), help="Tokens waiting per model before 429.")
@click.option("--max-body-mb", default=16, show_default=True, type=click.IntRange(1), help="Largest request body in MiB (413 above).")
@click.option(
    "--price-per-million-tokens", default=0.0, show_default=True, type=click.FloatRange(0),
    envvar="KEEPWARM_PRICE_PER_MILLION_TOKENS", help="Dollars per million tokens, for the cost of batch jobs.",
)
@click.option(
    "--batch-chunk-inputs", default=64, show_default=True, type=click.IntRange(1),
    help="Batch inputs per checkpoint: a crash redoes at most this much work.",
)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def serve(
    host: str,
    port: int,
    models: tuple[str, ...],
    config: Path | None,
    data_dir: Path,
    max_batch_tokens: int,
    max_batch_size: int,
    max_queue_tokens: int,
    max_body_mb: int,
    price_per_million_tokens: float,
    batch_chunk_inputs: int,
    log_level: str,
) -> None:
    """Serve embedding models over an OpenAI-compatible HTTP API."""
    from keepwarm.api import ApiSettings
    from keepwarm.batches import BatchSettings, RunnerSettings
    from keepwarm.engine import BatchLimits, Engine, EngineSettings
    from keepwarm.server import configure_logging
    from keepwarm.server import serve as run_server

    configure_logging(log_level)
    try:
        specs = [entry.to_spec() for entry in model_entries(config, models)]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    limits = BatchLimits(max_batch_tokens, max_batch_size, max_queue_tokens)
    engine = Engine(specs, data_dir, EngineSettings(batch=limits))
    api = ApiSettings(max_body_bytes=max_body_mb * 1024 * 1024)
    batch = BatchSettings(price_per_million_tokens, runner=RunnerSettings(chunk_inputs=batch_chunk_inputs))
    sys.exit(run_server(engine, host, port, api, batch))
