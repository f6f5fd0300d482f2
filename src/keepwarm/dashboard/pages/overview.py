"""The overview: every served model version, and live charts from the metrics history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from keepwarm.api.responses import JSONResponse
from keepwarm.dashboard import views
from keepwarm.dashboard.gate import Visitor
from keepwarm.errors import InvalidRequest

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes


def register(routes: Routes) -> None:
    engine, history = routes.services.engine, routes.history

    @routes.page("")
    async def overview(request: Request, visitor: Visitor) -> Response:
        context = {
            "models": views.model_rows(engine.catalog()),
            "ready": engine.ready,
            "history": history.series(),
        }
        return routes.render(request, visitor, "overview.html", context)

    @routes.data("/api/metrics")
    async def metrics(request: Request, visitor: Visitor) -> Response:
        """The points sampled after `after` (seconds since the epoch), which the page appends."""
        after = request.query_params.get("after")
        try:
            since = float(after) if after else None
        except ValueError:
            raise InvalidRequest("'after' must be a timestamp in seconds.", param="after") from None
        return JSONResponse(history.series(since))
