"""`keepwarm serve`: run the HTTP service."""

from __future__ import annotations

import ipaddress
import logging
import sys
from functools import partial
from pathlib import Path

import click

from keepwarm.batches.tenancy import TenantLimits
from keepwarm.cli.options import (
    CONFIG_OPTIONS,
    DATA_DIR_OPTION,
    load_specs,
    model_specs,
    open_database,
    pricing_options,
)
from keepwarm.engine import Engine
from keepwarm.logs import FORMATS

log = logging.getLogger("keepwarm")
_MIB = 1024 * 1024
_TENANT_DEFAULTS = TenantLimits()


def is_loopback(host: str) -> bool:
    """True if only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_auth(has_keys: bool, host: str, allow_unauthenticated: bool) -> bool:
    """Whether the server may run open while no keys exist; refuses unsafe set-ups."""
    if has_keys:
        log.info("API keys required: requests need 'Authorization: Bearer <key>'")
    elif is_loopback(host):
        log.warning("no API keys exist: serving WITHOUT authentication, on loopback only "
                    "(create one with `keepwarm keys create --name NAME`)")
    elif allow_unauthenticated:
        log.warning("no API keys exist: serving WITHOUT authentication on %s (--allow-unauthenticated)", host)
    else:
        raise click.UsageError(
            f"no API keys exist, and --host {host} is reachable from other machines. Create a key first "
            "(`keepwarm keys create --name NAME`), or pass --allow-unauthenticated to serve without keys."
        )
    return is_loopback(host) or allow_unauthenticated


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@CONFIG_OPTIONS
@DATA_DIR_OPTION
@click.option("--max-batch-tokens", type=click.IntRange(1), show_default="measured per model at first load",
              help="Padded tokens per model call, for every model.")
@click.option("--max-batch-size", default=64, show_default=True, type=click.IntRange(1), help="Rows per model call.")
@click.option("--max-batch-padding-tokens", type=click.IntRange(0), show_default="measured per model at first load",
              help="Padding tokens a model call may hold, for every model.")
@click.option("--max-queue-tokens", default=600_000, show_default=True, type=click.IntRange(1), help="Tokens waiting per model before 429.")
@click.option("--max-body-mb", default=16, show_default=True, type=click.IntRange(1), help="Largest request body in MiB (413 above).")
@click.option("--max-input-chars", default=1_000_000, show_default=True, type=click.IntRange(1),
              help="Longest input in characters (token-id inputs: ids); longer ones are refused with 400.")
@click.option(
    "--batch-chunk-inputs", default=64, show_default=True, type=click.IntRange(1),
    help="Batch inputs per checkpoint: a crash redoes at most this much work.",
)
@click.option(
    "--max-stored-mb",
    default=_TENANT_DEFAULTS.max_stored_bytes // _MIB,
    show_default=True,
    type=click.IntRange(1),
    help="Files (uploads and batch outputs) one API key may keep, in MiB (429 storage_quota_exceeded above).",
)
@click.option(
    "--max-open-batches",
    default=_TENANT_DEFAULTS.max_open_batches,
    show_default=True,
    type=click.IntRange(1),
    help="Unfinished batches one API key may have (429 too_many_open_batches above).",
)
@click.option("--cache-mb", default=256, show_default=True, type=click.IntRange(0), help="In-memory embedding cache (0: off).")
@click.option("--persistent-cache", is_flag=True, help="Also keep cached vectors in the data directory across restarts.")
@click.option(
    "--queue-timeout", default=60.0, show_default=True, type=click.FloatRange(0),
    help="Seconds a request may wait in the queue before it is dropped with 503 (0: no limit).",
)
@click.option(
    "--allow-unauthenticated", is_flag=True,
    help="Serve without API keys on a non-loopback --host while no key exists.",
)
@click.option(
    "--drain-seconds", default=0.0, show_default=True, type=click.FloatRange(0),
    help="On SIGTERM, keep answering 503 for at least this long before closing the socket.",
)
@click.option(
    "--grace-seconds", default=30.0, show_default=True, type=click.FloatRange(0),
    help="On SIGTERM, longest wait for in-flight requests before they are cancelled.",
)
@pricing_options
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(FORMATS), help="Log line format.")
def serve(
    host: str,
    port: int,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
    max_batch_tokens: int | None,
    max_batch_size: int,
    max_batch_padding_tokens: int | None,
    max_queue_tokens: int,
    max_body_mb: int,
    max_input_chars: int,
    batch_chunk_inputs: int,
    max_stored_mb: int,
    max_open_batches: int,
    cache_mb: int,
    persistent_cache: bool,
    queue_timeout: float,
    allow_unauthenticated: bool,
    drain_seconds: float,
    grace_seconds: float,
    price_per_million_tokens: float,
    price_per_hour: float,
    log_level: str,
    log_format: str,
) -> None:
    """Serve embedding models over an OpenAI-compatible HTTP API."""
    from keepwarm.api import ApiSettings
    from keepwarm.api.lifecycle import ShutdownSettings
    from keepwarm.batches import BatchSettings, Limits, RunnerSettings
    from keepwarm.engine import CallLimits, EngineSettings
    from keepwarm.logs import configure_logging
    from keepwarm.server import serve as run_server
    from keepwarm.cost import Pricing
    from keepwarm.store import KeyStore

    configure_logging(log_level, log_format)
    specs = model_specs(config, model_options)
    db = open_database(data_dir)
    open_when_keyless = _check_auth(KeyStore(db).has_active(), host, allow_unauthenticated)
    limits = CallLimits(
        max_call_tokens=max_batch_tokens,
        max_call_rows=max_batch_size,
        max_queue_tokens=max_queue_tokens,
        max_padding_tokens=max_batch_padding_tokens,
    )
    settings = EngineSettings(
        calls=limits,
        max_input_chars=max_input_chars,
        cache_bytes=cache_mb * 1024 * 1024,
        persistent_cache=persistent_cache,
        queue_timeout=queue_timeout or None,
    )
    engine = Engine(specs, data_dir, settings)
    api = ApiSettings(
        max_body_bytes=max_body_mb * _MIB,
        open_when_keyless=open_when_keyless,
        pricing=Pricing(per_million_tokens=price_per_million_tokens, per_hour=price_per_hour),
        shutdown=ShutdownSettings(drain_seconds=drain_seconds, grace_seconds=grace_seconds),
    )
    reload = partial(_reload, engine, config, model_options)
    batch = BatchSettings(
        pricing=api.pricing,
        tenants=TenantLimits(max_stored_bytes=max_stored_mb * _MIB, max_open_batches=max_open_batches),
        runner=RunnerSettings(
            chunk_inputs=batch_chunk_inputs,
            limits=Limits(max_line_bytes=api.max_body_bytes),  # a batch line is held to the body limit
        ),
    )
    try:
        code = run_server(engine, db, host, port, api, batch=batch, reload=reload)
    finally:
        db.close()
    sys.exit(code)


def _reload(engine: Engine, config: Path | None, model_options: tuple[str, ...]) -> None:
    """Re-read the catalog (SIGHUP or POST /admin/reload) and swap it in."""
    engine.reconfigure(load_specs(config, model_options))
