"""Reading what the pages send: url-encoded forms and JSON bodies, each under a size limit.

Bodies are read with the API's own `read_body` (413 past the limit) and parsed here, so
a malformed one is a 400 in OpenAI's error envelope like any other bad request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request

from keepwarm.api.http import read_body
from keepwarm.errors import InvalidRequest

Form = dict[str, list[str]]
_FORM_LIMIT = 64 * 1024
_JSON_LIMIT = 4 * 1024 * 1024  # a pasted sample for a versions diff, or the playground's texts


async def read_form(request: Request) -> Form:
    try:
        return parse_qs(
            (await read_body(request, _FORM_LIMIT)).decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=100,
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The form could not be read.") from None


def field(form: Form, name: str) -> str:
    """A field's first value, stripped ("" when absent)."""
    return (form.get(name) or [""])[0].strip()


def limit(form: Form, name: str) -> int | None:
    """A per-minute limit: a whole number of at least 1, or empty for none."""
    value = field(form, name)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidRequest(f"{name.upper()} must be a whole number of at least 1 (or empty for no limit).")
    return int(value)


async def read_json(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await read_body(request, _JSON_LIMIT))
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body must be JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def texts(value: Any, name: str) -> list[str]:
    """A non-empty list of strings, blank ones dropped."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidRequest(f"'{name}' must be a list of strings.", param=name)
    kept = [t for t in value if t.strip()]
    if not kept:
        raise InvalidRequest(f"Give at least one non-empty text in '{name}'.", param=name)
    return kept
