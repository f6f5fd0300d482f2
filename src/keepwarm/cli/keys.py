"""`keepwarm keys`: create, list and revoke API keys in the state database (`--database`).

Servers read keys on every request, so changes apply to every running replica at once.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click
import orjson

from keepwarm.cli.options import DATA_DIR_OPTION, DATABASE_OPTION, open_database, table


def _models(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise click.BadParameter("give at least one model name", param_hint="--models")
    return names


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(timestamp)) if timestamp else "-"


@click.group()
def keys() -> None:
    """Manage API keys (stored as hashes; a secret is shown only when created)."""


@keys.command()
@click.option("--name", required=True, help="A name for the key's owner; shown in logs and usage.")
@click.option("--models", help="Comma-separated model names or aliases the key may use (default: all).")
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute (default: unlimited).")
@click.option("--tpm", type=click.IntRange(1), help="Tokens per minute (default: unlimited).")
@click.option("--admin", is_flag=True, help="Also allow admin endpoints (usage report).")
@DATA_DIR_OPTION
@DATABASE_OPTION
def create(
    name: str,
    models: str | None,
    rpm: int | None,
    tpm: int | None,
    admin: bool,
    data_dir: Path,
    database: str | None,
) -> None:
    """Create a key and print its secret, once, on standard output."""
    from keepwarm.store import KeyStore, StoreError

    try:
        key, secret = KeyStore(open_database(data_dir, database)).create(
            name, models=_models(models), rpm=rpm, tpm=tpm, admin=admin
        )
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)
    click.echo(
        f"created key '{key.name}' (id {key.prefix}); store the secret now, it cannot be shown again",
        err=True,
    )


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@DATA_DIR_OPTION
@DATABASE_OPTION
def list_keys(as_json: bool, data_dir: Path, database: str | None) -> None:
    """List keys, revoked ones included (never their secrets)."""
    from keepwarm.store import KeyStore

    found = KeyStore(open_database(data_dir, database)).list()
    if as_json:
        click.echo(orjson.dumps([asdict(key) for key in found], option=orjson.OPT_INDENT_2).decode())
        return
    header = ("ID", "NAME", "MODELS", "RPM", "TPM", "ADMIN", "CREATED (UTC)", "REVOKED (UTC)")
    rows = [
        (
            k.prefix,
            k.name,
            ",".join(k.models) if k.models else "all",
            str(k.rpm or "-"),
            str(k.tpm or "-"),
            "yes" if k.admin else "no",
            _when(k.created_at),
            _when(k.revoked_at),
        )
        for k in found
    ]
    click.echo(
        table(header, rows) if rows else "no keys (create one with `keepwarm keys create --name NAME`)"
    )


@keys.command()
@click.argument("name_or_id")
@DATA_DIR_OPTION
@DATABASE_OPTION
def revoke(name_or_id: str, data_dir: Path, database: str | None) -> None:
    """Revoke the active key with this name or id; it stops working at once."""
    from keepwarm.store import KeyStore, StoreError

    try:
        key = KeyStore(open_database(data_dir, database)).revoke(name_or_id)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked key '{key.name}' (id {key.prefix})")
