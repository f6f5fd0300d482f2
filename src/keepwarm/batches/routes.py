"""`/v1/files` and `/v1/batches` in OpenAI's shapes, as an APIRouter the app includes.

Handlers parse and render only; the service decides. Blocking work (disk, SQLite
commits) runs on the thread pool, never on the event loop that serves embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from keepwarm.api.auth import Auth
from keepwarm.api.http import read_body
from keepwarm.api.limits import RateLimiter
from keepwarm.api.responses import JSONResponse
from keepwarm.api.schemas import parse_json_body
from keepwarm.batches.service import BatchService
from keepwarm.errors import InvalidRequest, PayloadTooLarge

_MAX_CREATE_BODY = 1024 * 1024
_CONTENT_CHUNK = 1 << 16


class BatchCreate(BaseModel):
    """OpenAI's create-batch request; unknown fields (e.g. `output_expires_after`) are ignored."""

    model_config = ConfigDict(extra="ignore")

    input_file_id: StrictStr
    endpoint: StrictStr
    completion_window: StrictStr
    metadata: dict[StrictStr, StrictStr] | None = None


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def _stream(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CONTENT_CHUNK):
            yield chunk


def _expires_after(form: Any) -> int | None:
    """The `expires_after[seconds]` form field the official client sends, if any."""
    if form.get("expires_after[anchor]", "created_at") != "created_at":
        raise InvalidRequest("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
    seconds = form.get("expires_after[seconds]")
    if seconds is None:
        return None
    if not isinstance(seconds, str) or not seconds.isdigit():
        raise InvalidRequest("expires_after[seconds] must be an integer.", param="expires_after.seconds")
    return int(seconds)


def batch_router(service: BatchService, auth: Auth, limiter: RateLimiter) -> APIRouter:
    """The routes of OpenAI's Files and Batches APIs over `service`, for callers `auth` admits."""
    router = APIRouter(tags=["batches"], dependencies=[Depends(auth.caller)])
    limit = service.settings.max_file_bytes

    @router.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        """Upload a batch input file (multipart: `file`, `purpose="batch"`)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _CONTENT_CHUNK:
            raise PayloadTooLarge(f"The file is {declared} bytes; the limit is {limit} bytes.", param="file")
        async with request.form(max_files=1, max_fields=8) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("Missing required parameter: 'file' (a multipart file field).", param="file")
            if not isinstance(purpose, str):
                raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
            record = await run_in_threadpool(
                service.upload, upload.file, upload.filename or "upload.jsonl", purpose, _expires_after(form)
            )
        return JSONResponse(record.to_openai())

    @router.get("/v1/files")
    def list_files(
        after: str | None = None,
        limit: int = Query(10_000, ge=1, le=10_000),
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> Response:
        """Stored files, newest first by default, with cursor paging."""
        files, has_more = service.files.list(purpose=purpose, after=after, limit=limit, order=order)
        return JSONResponse(_page([f.to_openai() for f in files], has_more))

    @router.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> Response:
        return JSONResponse(service.files.get(file_id).to_openai())

    @router.get("/v1/files/{file_id}/content")
    def file_content(file_id: str) -> Response:
        """The file's bytes (for batch results: one JSON line per request)."""
        return StreamingResponse(_stream(service.files.open(file_id)), media_type="application/octet-stream")

    @router.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> Response:
        return JSONResponse(service.delete_file(file_id))

    @router.post("/v1/batches")
    async def create_batch(request: Request) -> Response:
        """Create a batch from an uploaded file; it validates, then runs in the background."""
        body = parse_json_body(BatchCreate, await read_body(request, _MAX_CREATE_BODY))
        batch = await run_in_threadpool(
            lambda: service.create_batch(
                input_file_id=body.input_file_id, endpoint=body.endpoint,
                completion_window=body.completion_window, metadata=body.metadata,
            )
        )
        return JSONResponse(service.render(batch))

    @router.get("/v1/batches")
    def list_batches(after: str | None = None, limit: int = Query(20, ge=1, le=100)) -> Response:
        """Batches, newest first, with cursor paging (`after`, `limit`)."""
        batches, has_more = service.jobs.list(after=after, limit=limit)
        return JSONResponse(_page([service.render(b) for b in batches], has_more))

    @router.get("/v1/batches/{batch_id}")
    def retrieve_batch(batch_id: str) -> Response:
        return JSONResponse(service.render(service.jobs.get(batch_id)))

    @router.post("/v1/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str) -> Response:
        """Cancel: `cancelling` until the running chunk commits, then `cancelled`."""
        return JSONResponse(service.render(service.cancel(batch_id)))

    return router
