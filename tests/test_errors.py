"""Bad input gets a clear OpenAI-style error with the right status, never a 5xx."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from helpers import MODEL

from keepwarm.api.lifecycle import Lifecycle
from keepwarm.api.middleware import RequestMiddleware
from keepwarm.metrics import Metrics

LONG_TEXT = "tokens " * 400  # about 400 model tokens; the model's limit is 256


@pytest.fixture(scope="module")
def http(server) -> httpx.Client:  # noqa: ANN001
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def embed(http: httpx.Client, **body) -> httpx.Response:  # noqa: ANN003
    return http.post("/v1/embeddings", json={"model": MODEL, **body})


ANY = object()  # an envelope field the test does not pin down (None would mean `null`)


def assert_error(response: httpx.Response, status: int, *, code: object = ANY, param: object = ANY) -> dict:
    """The response is OpenAI's error envelope with `status`, and `code`/`param` as given (None: null)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not ANY:
        assert error["code"] == code, error
    if param is not ANY:
        assert error["param"] == param, error
    return error


@pytest.mark.parametrize(
    "value",
    [
        "",
        [],
        [""],
        ["ok", ""],
        None,
        [None],
        ["ok", None],
        [[]],
        [["nested"]],
        [[1, 2], "mixed"],
        [1, 2.5],
        [[1, 2.0]],
        [True, False],
        {"text": "hi"},
        3.14,
        [[[1]]],
    ],
    ids=repr,
)
def test_malformed_input_is_400(http, value) -> None:  # noqa: ANN001
    error = assert_error(embed(http, input=value), 400, code=None)
    assert error["type"] == "invalid_request_error"
    assert error["param"].startswith("input")


def test_too_many_inputs_is_400(http) -> None:  # noqa: ANN001
    error = assert_error(embed(http, input=["x"] * 2049), 400, code=None, param="input")
    assert "2048" in error["message"]


def test_2048_inputs_are_accepted(http) -> None:  # noqa: ANN001
    response = embed(http, input=[f"text number {i}" for i in range(2048)], encoding_format="base64")
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2048


def test_missing_or_bad_model_is_400(http) -> None:  # noqa: ANN001
    assert_error(http.post("/v1/embeddings", json={"input": "hi"}), 400, code=None, param="model")
    assert_error(http.post("/v1/embeddings", json={"input": "hi", "model": 5}), 400, code=None, param="model")


def test_unknown_model_is_404_model_not_found(http) -> None:  # noqa: ANN001
    response = http.post("/v1/embeddings", json={"model": "nope", "input": "hi"})
    assert_error(response, 404, code="model_not_found", param="model")
    assert_error(http.get("/v1/models/nope"), 404, code="model_not_found", param="model")


@pytest.mark.parametrize("dimensions", [0, -1, 385, 10**9, "64", 1.5, True])
def test_bad_dimensions_is_400(http, dimensions) -> None:  # noqa: ANN001
    assert_error(embed(http, input="hi", dimensions=dimensions), 400, code=None, param="dimensions")


@pytest.mark.parametrize("fmt", ["int8", "", 1])
def test_bad_encoding_format_is_400(http, fmt) -> None:  # noqa: ANN001
    assert_error(embed(http, input="hi", encoding_format=fmt), 400, code=None, param="encoding_format")


def test_input_over_the_model_limit_names_index_and_limit(http) -> None:  # noqa: ANN001
    error = assert_error(
        embed(http, input=["short", LONG_TEXT]), 400, code="context_length_exceeded", param="input[1]"
    )
    assert "input[1]" in error["message"] and "256" in error["message"]


def test_truncate_embeds_the_first_tokens_and_counts_them(http, reference) -> None:  # noqa: ANN001
    response = embed(http, input=["short", LONG_TEXT], truncate=True, encoding_format="float")
    assert response.status_code == 200
    expected_tokens = int(reference.tokenize(["short", LONG_TEXT])["attention_mask"].sum())
    assert response.json()["usage"]["prompt_tokens"] == expected_tokens == 3 + 256


def test_a_long_string_is_a_clear_400(http) -> None:  # noqa: ANN001
    # 900,000 characters, under --max-input-chars (longer ones: test_long_inputs.py)
    error = assert_error(embed(http, input="a " * 450_000), 400, param="input[0]")
    assert "256" in error["message"]


def test_a_long_string_with_truncate_is_embedded(http) -> None:  # noqa: ANN001
    response = embed(http, input="word " * 180_000, truncate=True)
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 256


def test_body_over_the_limit_is_413(http) -> None:  # noqa: ANN001
    assert_error(embed(http, input="x" * (17 * 1024 * 1024)), 413, code="request_too_large")


def test_malformed_json_is_400(http) -> None:  # noqa: ANN001
    response = http.post(
        "/v1/embeddings", content=b'{"model": "x", "input": [', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, code=None)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"null",
        b'"text"',
        b'{"model": "' + MODEL.encode() + b'", "input": "\xff\xfe bad utf-8"}',
        b'{"model": "' + MODEL.encode() + b'", "input": "\\ud800 lone surrogate"}',
    ],
    ids=["empty", "array", "null", "string", "invalid-utf8", "lone-surrogate"],
)
def test_odd_bodies_are_400(http, body: bytes) -> None:  # noqa: ANN001
    assert_error(
        http.post("/v1/embeddings", content=body, headers={"content-type": "application/json"}),
        400,
        code=None,
    )


@pytest.mark.parametrize("ids", [[-1], [100_277], [10**30], [100_265, 5]], ids=repr)
def test_token_ids_outside_cl100k_are_400(http, ids) -> None:  # noqa: ANN001
    assert_error(embed(http, input=ids), 400, code=None, param="input[0]")
    assert_error(embed(http, input=[[1, 2], ids]), 400, code=None, param="input[1]")


def test_request_over_300k_tokens_is_400(http) -> None:  # noqa: ANN001
    texts = ["word " * 250] * 1300  # 1300 inputs of 252 tokens each
    assert_error(embed(http, input=texts), 400, code="max_tokens_per_request", param="input")


def test_unknown_route_is_404_envelope(http) -> None:  # noqa: ANN001
    assert_error(http.get("/v1/nothing-here"), 404, code="unknown_url")


def test_wrong_method_is_405_envelope(http) -> None:  # noqa: ANN001
    assert_error(http.get("/v1/embeddings"), 405, code=None, param=None)


def test_server_still_answers_after_all_that(http) -> None:  # noqa: ANN001
    assert embed(http, input="still alive").status_code == 200
    assert http.get("/ready").status_code == 200


# -- internal errors ------------------------------------------------------------------------------

SECRET_DETAIL = "/srv/keepwarm/private/module.py: KeyError('internal-state')"


async def _failing_route(scope, receive, send) -> None:  # noqa: ANN001 - an ASGI app with a bug
    raise RuntimeError(SECRET_DETAIL)


def _call_failing_app(headers: dict[str, str]) -> tuple[httpx.Response, Metrics]:
    metrics = Metrics()
    app = RequestMiddleware(_failing_route, lifecycle=Lifecycle(), metrics=metrics)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            return await client.post("/v1/embeddings", json={}, headers=headers)

    return asyncio.run(call()), metrics


def test_an_internal_error_names_the_request_id_and_nothing_else(caplog) -> None:  # noqa: ANN001
    response, metrics = _call_failing_app({"X-Request-ID": "trace-500"})
    error = assert_error(response, 500, code="internal_error", param=None)
    assert error["type"] == "server_error" and "trace-500" in error["message"]
    assert response.headers["x-request-id"] == "trace-500"
    for leak in ("RuntimeError", "KeyError", "/srv", "module.py", "internal-state", "Traceback"):
        assert leak not in response.text
    # the operator finds the details under the same id
    assert any(
        "trace-500" in r.getMessage() and r.exc_info and SECRET_DETAIL in str(r.exc_info[1])
        for r in caplog.records
    )
    counted = {"route": "unmatched", "model": "", "status": "500"}
    assert metrics.registry.get_sample_value("keepwarm_requests_total", counted) == 1


def test_an_internal_error_gets_a_fresh_request_id_when_none_was_sent() -> None:
    response, _ = _call_failing_app({})
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32 and request_id in response.json()["error"]["message"]
