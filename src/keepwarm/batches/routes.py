"""`/v1/files` and `/v1/batches` in OpenAI's shapes, as an APIRouter the app includes.

Handlers parse and render only; the service decides. Every route knows its caller's
API key (and counts against the key's requests per minute), and the service shows each
key only what it owns. Blocking work (disk, SQLite commits) runs on the thread pool,
never on the event loop that serves embeddings.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and the
# `Caller` dependency they name is local to `batch_router`, so they must be evaluated in place.

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from keepwarm.api.auth import Auth
from keepwarm.api.http import ClientDisconnected, read_body
from keepwarm.api.limits import RateLimiter
from keepwarm.api.responses import JSONResponse
from keepwarm.api.schemas import parse_json_body
from keepwarm.batches.service import BatchService
from keepwarm.errors import InvalidRequest, PayloadTooLarge
from keepwarm.store import ApiKey

_MAX_CREATE_BODY = 1024 * 1024
_CONTENT_CHUNK = 1 << 16
_FORM_LIMITS = {"max_files": 1, "max_fields": 8}
_DIGITS = re.compile(
    r"[0-9]{1,18}"
)  # ASCII digits only (str.isdigit() accepts "²"), and few enough for int()


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


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length", "")
    return int(declared) if _DIGITS.fullmatch(declared) else None


@contextlib.asynccontextmanager
async def _multipart(request: Request) -> AsyncIterator[FormData]:
    """The parsed form; a malformed body is a 400, a caller hanging up mid-upload a 499."""
    try:
        form = await request.form(**_FORM_LIMITS)
    except ClientDisconnect:
        raise ClientDisconnected from None
    except (HTTPException, MultiPartException) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise InvalidRequest(f"The multipart body could not be parsed: {detail}") from None
    try:
        yield form
    finally:
        await form.close()


def _text_field(form: FormData, name: str, *, required: bool) -> str | None:
    value = form.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        state = "is missing" if value is None else "must be a text field, not a file"
        raise InvalidRequest(f"The form field '{name}' {state}.", param=name.replace("[", ".").rstrip("]"))
    return value


def _expires_after(form: FormData) -> int | None:
    """The `expires_after[seconds]` form field the official client sends, if any."""
    if _text_field(form, "expires_after[anchor]", required=False) not in (None, "created_at"):
        raise InvalidRequest("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
    seconds = _text_field(form, "expires_after[seconds]", required=False)
    if seconds is None:
        return None
    if not _DIGITS.fullmatch(seconds):
        raise InvalidRequest(
            "expires_after[seconds] must be a whole number of seconds.", param="expires_after.seconds"
        )
    return int(seconds)


def batch_router(service: BatchService, auth: Auth, limiter: RateLimiter) -> APIRouter:
    """The routes of OpenAI's Files and Batches APIs over `service`.

    Batch tokens draw from `limiter`'s buckets, the ones the keys' online calls use.
    """
    router = APIRouter(tags=["batches"])
    limit = service.settings.max_file_bytes
    service.use_rate_limiter(limiter)

    async def caller(key: Annotated[ApiKey, Depends(auth.caller)]) -> ApiKey:
        """The caller's key, once its request is counted against the key's requests per minute."""
        limiter.check_request(key)
        return key

    Caller = Annotated[ApiKey, Depends(caller)]

    @router.post("/v1/files")
    async def upload_file(request: Request, key: Caller) -> Response:
        """Upload a batch input file (multipart: `file`, `purpose="batch"`)."""
        declared = _declared_length(request)
        if declared is not None:
            if declared > limit + _CONTENT_CHUNK:
                raise PayloadTooLarge(
                    f"The file is {declared} bytes; the limit is {limit} bytes.", param="file"
                )
            await run_in_threadpool(service.check_room, key, declared - _CONTENT_CHUNK)
        async with _multipart(request) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest(
                    "Missing required parameter: 'file' (a multipart file field).", param="file"
                )
            purpose = _text_field(form, "purpose", required=True)
            record = await run_in_threadpool(
                service.upload,
                key,
                upload.file,
                upload.filename or "upload.jsonl",
                purpose,
                _expires_after(form),
            )
        return JSONResponse(record.to_openai())

    @router.get("/v1/files")
    def list_files(
        key: Caller,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> Response:
        """The caller's files, newest first by default, with cursor paging."""
        files, has_more = service.list_files(key, purpose=purpose, after=after, limit=limit, order=order)
        return JSONResponse(_page([f.to_openai() for f in files], has_more))

    @router.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str, key: Caller) -> Response:
        return JSONResponse(service.get_file(key, file_id).to_openai())

    @router.get("/v1/files/{file_id}/content")
    def file_content(file_id: str, key: Caller) -> Response:
        """The file's bytes (for batch results: one JSON line per request)."""
        return StreamingResponse(
            _stream(service.open_file(key, file_id)), media_type="application/octet-stream"
        )

    @router.delete("/v1/files/{file_id}")
    def delete_file(file_id: str, key: Caller) -> Response:
        return JSONResponse(service.delete_file(key, file_id))

    @router.post("/v1/batches")
    async def create_batch(request: Request, key: Caller) -> Response:
        """Create a batch from an uploaded file; it validates, then runs in the background."""
        body = parse_json_body(BatchCreate, await read_body(request, _MAX_CREATE_BODY))
        batch = await run_in_threadpool(
            lambda: service.create_batch(
                key,
                input_file_id=body.input_file_id,
                endpoint=body.endpoint,
                completion_window=body.completion_window,
                metadata=body.metadata,
            )
        )
        return JSONResponse(service.render(batch))

    @router.get("/v1/batches")
    def list_batches(
        key: Caller, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> Response:
        """The caller's batches, newest first, with cursor paging (`after`, `limit`)."""
        batches, has_more = service.list_batches(key, after=after, limit=limit)
        return JSONResponse(_page([service.render(b) for b in batches], has_more))

    @router.get("/v1/batches/{batch_id}")
    def retrieve_batch(batch_id: str, key: Caller) -> Response:
        return JSONResponse(service.render(service.get_batch(key, batch_id)))

    @router.post("/v1/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str, key: Caller) -> Response:
        """Cancel: `cancelling` until the running chunk commits, then `cancelled`."""
        return JSONResponse(service.render(service.cancel(key, batch_id)))

    return router
