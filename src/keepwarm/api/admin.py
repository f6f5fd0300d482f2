"""Admin routes: need an admin key. Key management itself stays in the CLI, next to the data."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends
from starlette.responses import Response

from keepwarm.api.auth import Auth
from keepwarm.api.responses import JSONResponse
from keepwarm.api.store_access import StoreAccess
from keepwarm.cost import Pricing
from keepwarm.store import ApiKey, usage_report


def admin_router(auth: Auth, store: StoreAccess, pricing: Pricing) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"])

    @router.get("/usage")
    async def usage(
        since: date | None = None,
        until: date | None = None,
        key: str | None = None,
        _: ApiKey = Depends(auth.admin),
    ) -> Response:
        """Usage per UTC day, key, model and version, with cost at the server's configured price.

        `since` and `until` are inclusive UTC days (YYYY-MM-DD); `key` is a key's name or id.
        """
        rows = await store.call(store.usage.report, since, until, key)
        return JSONResponse(usage_report(rows, pricing))

    return router
