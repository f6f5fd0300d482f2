"""Batch jobs: progress, rate and time left, cancel, and the output and error files."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import IO, TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keepwarm.dashboard import views
from keepwarm.dashboard.forms import Form
from keepwarm.dashboard.gate import Visitor
from keepwarm.errors import NotFound

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes

_SHOWN = 100  # the newest jobs


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(1 << 16):
            yield chunk


def register(routes: Routes) -> None:
    service = routes.services.batches

    async def rows(visitor: Visitor) -> list[dict[str, Any]]:
        if service is None or visitor.key is None:
            return []
        batches, _ = await routes.store(partial(service.list_batches, visitor.key, after=None, limit=_SHOWN))
        return [views.batch_row(service.render(batch)) for batch in batches]

    @routes.page("/batches")
    async def batches_page(request: Request, visitor: Visitor) -> Response:
        context = {"batches": await rows(visitor), "enabled": service is not None}
        return routes.render(request, visitor, "batches.html", context)

    @routes.page("/batches/rows")
    async def batch_rows(request: Request, visitor: Visitor) -> Response:
        """The table's rows alone, which the page fetches again while a job runs."""
        return routes.render(request, visitor, "batch_rows.html", {"batches": await rows(visitor)})

    @routes.action("/batches/{batch_id}/cancel", back="/batches")
    async def cancel_batch(request: Request, visitor: Visitor, form: Form, batch_id: str) -> None:
        if service is None:
            raise NotFound("This server runs no batch jobs.")
        await routes.store(service.cancel, visitor.key, batch_id)
        routes.note(visitor, f"Cancelling {batch_id}: it stops after the chunk it is running.")

    @routes.page("/files/{file_id}")
    async def download(request: Request, visitor: Visitor) -> Response:
        """A batch's output or error file, as the Files API's content route gives it."""
        file_id = request.path_params["file_id"]
        if service is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        handle = await routes.store(service.open_file, visitor.key, file_id)
        headers = {
            "content-disposition": f'attachment; filename="{file_id}.jsonl"',
            "cache-control": "no-store",
        }
        return StreamingResponse(_chunks(handle), media_type="application/jsonl", headers=headers)
