"""`keepwarm serve`: run the HTTP service."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
from functools import partial
from pathlib import Path
from types import FrameType

import click

from keepwarm.api.lifecycle import ShutdownSettings
from keepwarm.api.settings import ApiSettings, ConnectionLimits
from keepwarm.batches import BatchSettings, Limits, RunnerSettings
from keepwarm.batches.tenancy import TenantLimits
from keepwarm.catalog import ModelSpec
from keepwarm.cli.options import (
    CONFIG_OPTIONS,
    DATA_DIR_OPTION,
    DATABASE_OPTION,
    load_specs,
    model_specs,
    open_database,
    pricing_options,
)
from keepwarm.cost import Pricing
from keepwarm.engine import CallLimitSettings, Engine, EngineSettings
from keepwarm.logs import DEFAULT_FORMAT, DEFAULT_LEVEL, FORMATS, LEVELS, configure_logging

log = logging.getLogger("keepwarm")


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
        log.warning(
            "no API keys exist: serving WITHOUT authentication, on loopback only "
            "(create one with `keepwarm keys create --name NAME`)"
        )
    elif allow_unauthenticated:
        log.warning("no API keys exist: serving WITHOUT authentication on %s (--allow-unauthenticated)", host)
    else:
        raise click.UsageError(
            f"no API keys exist, and --host {host} is reachable from other machines. Create a key first "
            "(`keepwarm keys create --name NAME`), or pass --allow-unauthenticated to serve without keys."
        )
    return is_loopback(host) or allow_unauthenticated


MiB = 1024 * 1024
KiB = 1024
# the defaults of every option below, stated once: in these settings' fields
_API = ApiSettings()
_ENGINE = EngineSettings()
_BATCHES = BatchSettings()
_CONNECTIONS = _API.connections


@click.command()
@click.option("--host", default=_API.host, show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=_API.port, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@CONFIG_OPTIONS
@DATA_DIR_OPTION
@DATABASE_OPTION
@click.option(
    "--max-batch-tokens",
    type=click.IntRange(1),
    default=_ENGINE.calls.max_call_tokens,
    show_default="measured per model at first load",
    help="Padded tokens per model call, for every model.",
)
@click.option(
    "--max-batch-size",
    default=_ENGINE.calls.max_call_rows,
    show_default=True,
    type=click.IntRange(1),
    help="Rows per model call.",
)
@click.option(
    "--max-batch-padding-tokens",
    type=click.IntRange(0),
    default=_ENGINE.calls.max_padding_tokens,
    show_default="measured per model at first load",
    help="Padding tokens a model call may hold, for every model.",
)
@click.option(
    "--max-queue-tokens",
    default=_ENGINE.calls.max_queue_tokens,
    show_default=True,
    type=click.IntRange(1),
    help="Tokens waiting per model before 429.",
)
@click.option(
    "--max-body-mb",
    default=_API.max_body_bytes // MiB,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request body in MiB (413 above).",
)
@click.option(
    "--max-input-chars",
    default=_ENGINE.max_input_chars,
    show_default=True,
    type=click.IntRange(1),
    help="Longest input in characters (token-id inputs: ids); longer ones are refused with 400.",
)
@click.option(
    "--max-stored-mb",
    default=_BATCHES.tenants.max_stored_bytes // MiB,
    show_default=True,
    type=click.IntRange(1),
    help="Files (uploads and batch outputs) one API key may keep, in MiB (429 storage_quota_exceeded above).",
)
@click.option(
    "--max-open-batches",
    default=_BATCHES.tenants.max_open_batches,
    show_default=True,
    type=click.IntRange(1),
    help="Unfinished batches one API key may have (429 too_many_open_batches above).",
)
@click.option(
    "--batch-chunk-inputs",
    default=_BATCHES.runner.chunk_inputs,
    show_default=True,
    type=click.IntRange(1),
    help="Batch inputs per checkpoint: a crash redoes at most this much work.",
)
@click.option(
    "--cache-mb",
    default=_ENGINE.cache_bytes // MiB,
    show_default=True,
    type=click.IntRange(0),
    help="In-memory embedding cache (0: off).",
)
@click.option(
    "--persistent-cache",
    is_flag=True,
    default=_ENGINE.persistent_cache,
    help="Also keep cached vectors across restarts: in the data directory, or in --database.",
)
@click.option(
    "--queue-timeout",
    default=_ENGINE.queue_timeout or 0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a request may wait in the queue before it is dropped with 503 (0: no limit).",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    help="Serve without API keys on a non-loopback --host while no key exists.",
)
@click.option(
    "--drain-seconds",
    default=_API.shutdown.drain_seconds,
    show_default=True,
    type=click.FloatRange(0),
    help="On SIGTERM, keep answering 503 for at least this long before closing the socket.",
)
@click.option(
    "--grace-seconds",
    default=_API.shutdown.grace_seconds,
    show_default=True,
    type=click.FloatRange(0),
    help="On SIGTERM, longest wait for in-flight requests before they are cancelled.",
)
@click.option(
    "--max-connections",
    default=_CONNECTIONS.max_connections,
    show_default=True,
    type=click.IntRange(1),
    help="Open connections at once; more are answered 503 and closed.",
)
@click.option(
    "--max-header-kb",
    default=_CONNECTIONS.max_header_bytes // KiB,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request line and headers in KiB (431 above).",
)
@click.option(
    "--header-timeout",
    default=_CONNECTIONS.header_timeout,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a request's headers may take to arrive (408).",
)
@click.option(
    "--body-timeout",
    default=_CONNECTIONS.body_timeout,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Longest pause in a request body, in seconds (408).",
)
@click.option(
    "--min-body-rate",
    default=_CONNECTIONS.min_body_rate,
    show_default=True,
    type=click.IntRange(0),
    help="Bytes/s a body must average after its first --body-timeout seconds (408 below; 0: off).",
)
@click.option(
    "--keep-alive-timeout",
    default=_CONNECTIONS.keep_alive_timeout,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Idle seconds between requests before a connection is closed.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Serve the models as Ray Serve deployments: on the cluster whose head is at ADDRESS "
    "(host:port), or, without ADDRESS, on one started here (docs/scaling.md; needs keepwarm[cluster]).",
)
@pricing_options
@click.option("--log-level", default=DEFAULT_LEVEL, show_default=True, type=click.Choice(LEVELS))
@click.option(
    "--log-format",
    default=DEFAULT_FORMAT,
    show_default=True,
    type=click.Choice(FORMATS),
    help="Log line format.",
)
def serve(
    host: str,
    port: int,
    config: Path | None,
    model_options: tuple[str, ...],
    data_dir: Path,
    database: str | None,
    max_batch_tokens: int | None,
    max_batch_size: int,
    max_batch_padding_tokens: int | None,
    max_queue_tokens: int,
    max_body_mb: int,
    max_input_chars: int,
    max_stored_mb: int,
    max_open_batches: int,
    batch_chunk_inputs: int,
    cache_mb: int,
    persistent_cache: bool,
    queue_timeout: float,
    allow_unauthenticated: bool,
    drain_seconds: float,
    grace_seconds: float,
    max_connections: int,
    max_header_kb: int,
    header_timeout: float,
    body_timeout: float,
    min_body_rate: int,
    keep_alive_timeout: float,
    price_per_million_tokens: float,
    ray_address: str | None,
    price_per_hour: float,
    log_level: str,
    log_format: str,
) -> None:
    """Serve embedding models over an OpenAI-compatible HTTP API."""
    from keepwarm.server import serve as run_server
    from keepwarm.store import KeyStore

    signal.signal(signal.SIGTERM, _stopped_while_starting)
    configure_logging(log_level, log_format)
    specs = model_specs(config, model_options)
    db = open_database(data_dir, database)
    open_when_keyless = _check_auth(KeyStore(db).has_active(), host, allow_unauthenticated)
    limits = CallLimitSettings(
        max_call_tokens=max_batch_tokens,
        max_call_rows=max_batch_size,
        max_queue_tokens=max_queue_tokens,
        max_padding_tokens=max_batch_padding_tokens,
    )
    settings = EngineSettings(
        calls=limits,
        max_input_chars=max_input_chars,
        cache_bytes=cache_mb * MiB,
        persistent_cache=persistent_cache,
        cache_database=database if persistent_cache else None,  # replicas made alike whatever else
        queue_timeout=queue_timeout or None,
    )
    engine = (
        _cluster_engine(ray_address, specs, data_dir, settings, log_level)
        if ray_address
        else Engine(specs, data_dir, settings)
    )
    pricing = Pricing(per_million_tokens=price_per_million_tokens, per_hour=price_per_hour)
    api = ApiSettings(
        host=host,
        port=port,
        max_body_bytes=max_body_mb * MiB,
        open_when_keyless=open_when_keyless,
        pricing=pricing,
        shutdown=ShutdownSettings(drain_seconds=drain_seconds, grace_seconds=grace_seconds),
        connections=ConnectionLimits(
            max_connections=max_connections,
            max_header_bytes=max_header_kb * KiB,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            min_body_rate=min_body_rate,
            keep_alive_timeout=keep_alive_timeout,
        ),
    )
    reload = partial(_reload, engine, config, model_options)
    batch = BatchSettings(
        pricing=pricing,
        tenants=TenantLimits(max_stored_bytes=max_stored_mb * MiB, max_open_batches=max_open_batches),
        runner=RunnerSettings(
            chunk_inputs=batch_chunk_inputs,
            limits=Limits(max_line_bytes=api.max_body_bytes),  # a batch line is held to the body limit
        ),
    )
    try:
        code = run_server(engine, db, api, batch, reload)
    finally:
        db.close()
    sys.exit(code)


def _cluster_engine(
    address: str, specs: list[ModelSpec], data_dir: Path, settings: EngineSettings, log_level: str
) -> Engine:
    """The engine of `--ray`: the same API, each model version a Ray Serve deployment (cluster/)."""
    from keepwarm.cluster import require_ray
    from keepwarm.errors import ConfigError

    try:
        require_ray()
    except ConfigError as exc:
        raise click.UsageError(f"--ray: {exc}") from None
    from keepwarm.cluster.connection import join
    from keepwarm.cluster.deployment import start_serve
    from keepwarm.cluster.engine import ClusterEngine

    try:
        join(address)
    except ConfigError as exc:
        raise click.ClickException(f"--ray: {exc}") from None
    start_serve()
    return ClusterEngine(specs, data_dir, settings, log_level)  # type: ignore[return-value]  # Engine's API


def _stopped_while_starting(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before the server has taken over signals: nothing was accepted, so a clean exit."""
    raise SystemExit(0)


def _reload(engine: Engine, config: Path | None, model_options: tuple[str, ...]) -> None:
    """Re-read the catalog (SIGHUP or POST /admin/reload) and swap it in."""
    engine.reconfigure(load_specs(config, model_options))
