"""`keepwarm usage`: what each key used, per UTC day, model and version, and what it cost."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
import orjson

from keepwarm.cli.options import DATA_DIR_OPTION, DATABASE_OPTION, open_database, pricing_options, table

_DAY = click.DateTime(formats=["%Y-%m-%d"])


@click.command()
@click.option("--since", type=_DAY, help="First UTC day (YYYY-MM-DD), inclusive.")
@click.option("--until", type=_DAY, help="Last UTC day (YYYY-MM-DD), inclusive.")
@click.option("--key", help="Only this key (name or id).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (the shape of GET /admin/usage).")
@pricing_options
@DATA_DIR_OPTION
@DATABASE_OPTION
def usage(
    since: datetime | None,
    until: datetime | None,
    key: str | None,
    as_json: bool,
    price_per_million_tokens: float,
    price_per_hour: float,
    data_dir: Path,
    database: str | None,
) -> None:
    """Report metered usage from the state database (works while the server runs)."""
    from keepwarm.cost import Pricing
    from keepwarm.store import UsageStore, usage_report

    rows = UsageStore(open_database(data_dir, database)).report(
        since.date() if since else None, until.date() if until else None, key
    )
    report = usage_report(rows, Pricing(per_million_tokens=price_per_million_tokens, per_hour=price_per_hour))
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    header = ("DAY", "KEY", "MODEL", "VERSION", "REQUESTS", "TOKENS", "CACHE HITS", "COMPUTE S", "COST")
    cells = [
        (
            r["day"],
            r["key_name"],
            r["model"],
            r["version"],
            str(r["requests"]),
            str(r["tokens"]),
            str(r["cache_hits"]),
            f"{r['compute_seconds']:.2f}",
            f"{r['cost']:.6f}",
        )
        for r in report["data"]
    ]
    total = report["total"]
    cells.append(
        (
            "total",
            "",
            "",
            "",
            str(total["requests"]),
            str(total["tokens"]),
            str(total["cache_hits"]),
            f"{total['compute_seconds']:.2f}",
            f"{total['cost']:.6f}",
        )
    )
    click.echo(table(header, cells))
