"""Usage and cost per day, key and model over a chosen range, with CSV export and the break-even."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from keepwarm.dashboard import views
from keepwarm.dashboard.gate import Visitor
from keepwarm.dashboard.render import base_path

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes


def register(routes: Routes) -> None:
    services = routes.services

    async def usage_of(request: Request) -> tuple[views.UsageQuery, dict[str, Any]]:
        query = views.UsageQuery.parse(dict(request.query_params), views.today_utc())
        rows = await routes.store(services.store.usage.report, query.since, query.until, query.key)
        return query, views.usage_view(rows, services.pricing, query)

    @routes.page("/usage")
    async def usage(request: Request, visitor: Visitor) -> Response:
        query, shown = await usage_of(request)
        context = {
            "query": query,
            "usage": shown,
            "pricing": services.pricing,
            "keys": await routes.store(services.store.keys.list),
            "models": sorted({view.spec.name for view in services.engine.catalog()}),
            "csv_url": f"{base_path(request)}/usage.csv?{urlencode(dict(request.query_params))}",
        }
        return routes.render(request, visitor, "usage.html", context)

    @routes.page("/usage.csv")
    async def usage_csv(request: Request, visitor: Visitor) -> Response:
        """The table's rows as CSV, for the same range, key and model."""
        query, shown = await usage_of(request)
        out = io.StringIO()
        writer = csv.DictWriter(out, views.CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(shown["report"]["data"])
        name = f"keepwarm-usage-{query.since}-{query.until}.csv"
        headers = {"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"}
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
