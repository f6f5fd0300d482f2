"""Versions side by side, a diff between two of them (re-embed or not), and the catalog reload."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from keepwarm.api.responses import JSONResponse
from keepwarm.bench.corpus import CorpusError, parse_corpus
from keepwarm.dashboard import views
from keepwarm.dashboard.forms import Form, read_json
from keepwarm.dashboard.gate import Visitor
from keepwarm.errors import InvalidRequest
from keepwarm.reembed.diff import diff_versions
from keepwarm.runtimes.probe import PROBE_TEXTS

if TYPE_CHECKING:
    from keepwarm.dashboard.routes import Routes

_MAX_SAMPLE_TEXTS = 2000


def _sample(value: object) -> tuple[list[str], str]:
    """The texts to compare on: a pasted or uploaded JSONL sample, else keepwarm's probe texts."""
    if not isinstance(value, str) or not value.strip():
        return list(PROBE_TEXTS), "keepwarm's probe texts"
    try:
        return parse_corpus(value.encode("utf-8"), "sample")[:_MAX_SAMPLE_TEXTS], "your sample"
    except CorpusError as exc:
        raise InvalidRequest(str(exc), param="sample") from None


def register(routes: Routes) -> None:
    engine, reload = routes.services.engine, routes.services.reload

    @routes.page("/versions")
    async def versions_page(request: Request, visitor: Visitor) -> Response:
        catalog = engine.catalog()
        context = {
            "groups": views.version_groups(catalog),
            "fields": views.VERSION_FIELDS,
            "choices": views.model_choices(catalog),
            "reloadable": reload is not None,
            "probe_texts": len(PROBE_TEXTS),
        }
        return routes.render(request, visitor, "versions.html", context)

    @routes.data("/api/diff", method="POST")
    async def diff(request: Request, visitor: Visitor) -> Response:
        """`keepwarm models diff` on the served versions, with the cosines' histogram."""
        body = await read_json(request)
        first, second = body.get("first"), body.get("second")
        if not isinstance(first, str) or not isinstance(second, str):
            raise InvalidRequest("Choose two versions ('first' and 'second').")
        texts, source = _sample(body.get("sample"))
        result = await diff_versions(engine, first, second, texts)
        answer = {**result.report(), "source": source}
        if result.cosines is not None:
            answer["histogram"] = views.cosine_histogram(result.cosines)
        return JSONResponse(answer)

    @routes.action("/versions/reload", back="/versions")
    async def reload_catalog(request: Request, visitor: Visitor, form: Form) -> None:
        if reload is None:
            raise InvalidRequest("This server was started without a reloadable catalog.")
        await asyncio.get_running_loop().run_in_executor(None, reload)
        served = ", ".join(row["pin"] for row in views.model_rows(engine.catalog()) if row["current"])
        routes.note(visitor, f"Catalog reloaded: serving {served}.")
