"""Rendering the dashboard: Jinja2 templates and static files, both shipped inside the package.

Pages are rendered whole on the server, so they paint without waiting for a script;
one small script (static/dashboard.js) draws the charts from data embedded in the page
and keeps them live. Nothing is loaded from another origin, and the Content-Security-
Policy says so to the browser: scripts, styles and requests come from this server only.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from keepwarm.dashboard.gate import CSRF_FIELD, Visitor

_HERE = Path(__file__).parent
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
NAVIGATION = (
    ("", "Overview"),
    ("/usage", "Usage"),
    ("/keys", "Keys"),
    ("/batches", "Batches"),
    ("/versions", "Versions"),
    ("/playground", "Playground"),
)
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    digest: str


def _load_assets() -> dict[str, Asset]:
    return {
        path.name: Asset(
            path.read_bytes(), _MEDIA_TYPES[path.suffix], hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        )
        for path in sorted((_HERE / "static").iterdir())
        if path.suffix in _MEDIA_TYPES
    }


ASSETS = _load_assets()


def asset_response(name: str) -> Response | None:
    """A static file, cached for a year (its URL changes with its contents); None if there is no such file."""
    asset = ASSETS.get(name)
    if asset is None:
        return None
    headers = {"cache-control": "public, max-age=31536000, immutable", "x-content-type-options": "nosniff"}
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def base_path(request: Request) -> str:
    """Where the dashboard is mounted, behind any proxy prefix."""
    return f"{request.scope.get('root_path', '')}/dashboard"


# -- template filters ----------------------------------------------------------------------------


def _number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _dollars(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.6f}"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "–"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(number=_number, dollars=_dollars, when=_when, duration=_duration)
    return environment


class Renderer:
    """Renders templates with what every page shows: navigation, who is signed in, the CSRF token."""

    def __init__(self) -> None:
        self.environment = _environment()

    def render(
        self, request: Request, visitor: Visitor, template: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        base = base_path(request)
        flash, visitor.session.flash = visitor.session.flash, []
        page = self.environment.get_template(template).render(
            base=base,
            navigation=[(base + path, label) for path, label in NAVIGATION],
            current=request.url.path,
            visitor=visitor,
            csrf=visitor.session.csrf,
            csrf_field=CSRF_FIELD,
            flash=flash,
            asset=lambda name: f"{base}/static/{name}?v={ASSETS[name].digest}",
            rendered_at=time.time(),
            **context,
        )
        return HTMLResponse(page, status, headers={**SECURITY_HEADERS, "cache-control": "no-store"})
