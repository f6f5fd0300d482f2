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
@click.option("--max-batch-tokens", default=2048, show_default=True, type=click.IntRange(1), help="Padded tokens per model call.")
@click.option("--max-batch-size", default=64, show_default=True, type=click.IntRange(1), help="Rows per model call.")
@click.option("--max-batch-padding", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Largest share of a model call's padded tokens that may be padding.")
@click.option("--max-queue-tokens", default=600_000, show_default=True, type=click.IntRange(1), help="Tokens waiting per model before 429.")
@click.option("--max-body-mb", default=16, show_default=True, type=click.IntRange(1), help="Largest request body in MiB (413 above).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def serve(
    host: str,
    port: int,
    models: tuple[str, ...],
    config: Path | None,
    data_dir: Path,
    max_batch_tokens: int,
    max_batch_size: int,
    max_batch_padding: float,
    max_queue_tokens: int,
    max_body_mb: int,
    log_level: str,
) -> None:
    """Serve embedding models over an OpenAI-compatible HTTP API."""
    from keepwarm.api import ApiSettings
    from keepwarm.engine import BatchLimits, Engine, EngineSettings
    from keepwarm.server import configure_logging
    from keepwarm.server import serve as run_server

    configure_logging(log_level)
    try:
        specs = [entry.to_spec() for entry in model_entries(config, models)]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    limits = BatchLimits(max_batch_tokens, max_batch_size, max_queue_tokens, max_batch_padding)
    engine = Engine(specs, data_dir, EngineSettings(batch=limits))
    sys.exit(run_server(engine, host, port, ApiSettings(max_body_bytes=max_body_mb * 1024 * 1024)))
