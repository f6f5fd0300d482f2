"""`keepwarm serve`: run the HTTP service."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import click

from keepwarm.cli.options import CONFIG_OPTIONS, DATA_DIR_OPTION, load_specs, model_specs
from keepwarm.engine import Engine


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@CONFIG_OPTIONS
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
@click.option("--cache-mb", default=256, show_default=True, type=click.IntRange(0), help="In-memory embedding cache (0: off).")
@click.option("--persistent-cache", is_flag=True, help="Also keep cached vectors in the data directory across restarts.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def serve(
    host: str,
    port: int,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
    max_batch_tokens: int,
    max_batch_size: int,
    max_queue_tokens: int,
    max_body_mb: int,
    price_per_million_tokens: float,
    batch_chunk_inputs: int,
    cache_mb: int,
    persistent_cache: bool,
    log_level: str,
) -> None:
    """Serve embedding models over an OpenAI-compatible HTTP API."""
    from keepwarm.api import ApiSettings
    from keepwarm.batches import BatchSettings, RunnerSettings
    from keepwarm.engine import BatchLimits, EngineSettings
    from keepwarm.server import configure_logging
    from keepwarm.server import serve as run_server

    configure_logging(log_level)
    specs = model_specs(config, model_options)
    limits = BatchLimits(max_batch_tokens, max_batch_size, max_queue_tokens)
    settings = EngineSettings(batch=limits, cache_bytes=cache_mb * 1024 * 1024, persistent_cache=persistent_cache)
    engine = Engine(specs, data_dir, settings)
    api = ApiSettings(max_body_bytes=max_body_mb * 1024 * 1024)
    reload = partial(_reload, engine, config, model_options)
    batch = BatchSettings(price_per_million_tokens, runner=RunnerSettings(chunk_inputs=batch_chunk_inputs))
    sys.exit(run_server(engine, host, port, api, batch=batch, reload=reload))


def _reload(engine: Engine, config: Path | None, model_options: tuple[str, ...]) -> None:
    """Re-read the catalog (SIGHUP or POST /admin/reload) and swap it in."""
    engine.reconfigure(load_specs(config, model_options))
