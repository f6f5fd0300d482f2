"""What the server tells operators: Prometheus metrics, timing headers, one JSON log line per request."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
from helpers import MODEL, create_key, wait_for


@pytest.fixture(scope="module")
def key(keyed_server) -> str:  # noqa: ANN001
    return create_key(keyed_server.data_dir, "observed")


def _embed(url: str, key: str, text: str | None = None, **headers: str) -> httpx.Response:
    text = text or f"new text {uuid.uuid4().hex}"  # not in the embedding cache: the model runs
    return httpx.post(
        f"{url}/v1/embeddings",
        json={"model": MODEL, "input": [text, text + " again"]},
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=60,
    )


def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics").text


def test_answers_carry_request_id_and_timing_headers(keyed_server, key) -> None:  # noqa: ANN001
    answer = _embed(keyed_server.url, key)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    times = {
        name: float(answer.headers[f"x-{name}-time"])
        for name in ("total", "tokenization", "queue", "inference")
    }
    assert all(value >= 0 for value in times.values()) and times["inference"] > 0
    assert times["total"] >= times["tokenization"] + times["queue"] + times["inference"] - 0.01


def test_a_callers_request_id_is_echoed(keyed_server, key) -> None:  # noqa: ANN001
    assert (
        _embed(keyed_server.url, key, **{"X-Request-ID": "trace-42.a"}).headers["x-request-id"]
        == "trace-42.a"
    )
    assert (
        _embed(keyed_server.url, key, **{"X-Request-ID": "bad id\t!"}).headers["x-request-id"] != "bad id\t!"
    )


@pytest.mark.parametrize(
    "series",
    [
        f'keepwarm_requests_total{{model="{MODEL}",route="/v1/embeddings",status="200"}}',
        'keepwarm_requests_total{model="",route="/v1/embeddings",status="401"}',
        'keepwarm_request_errors_total{code="invalid_api_key",model=""}',
        f'keepwarm_request_duration_seconds_bucket{{le="0.5",model="{MODEL}"}}',
        f'keepwarm_request_tokenization_seconds_count{{model="{MODEL}"}}',
        f'keepwarm_request_queue_seconds_count{{model="{MODEL}"}}',
        f'keepwarm_request_inference_seconds_count{{model="{MODEL}"}}',
        f'keepwarm_request_tokens_total{{model="{MODEL}"}}',
        # the engine's own series name the model version too: model="all-minilm-l6-v2@<version>"
        f'keepwarm_batch_rows_count{{model="{MODEL}@',
        f'keepwarm_batch_tokens_sum{{model="{MODEL}@',
        f'keepwarm_inference_seconds_count{{model="{MODEL}@',
        f'keepwarm_queue_tokens{{model="{MODEL}@',
        f'keepwarm_tokens_per_second{{model="{MODEL}@',
        f'keepwarm_model_load_seconds{{model="{MODEL}@',
        'keepwarm_cache_lookups_total{result="miss"}',
        "keepwarm_requests_in_flight",
    ],
)
def test_metrics_expose_the_series(keyed_server, key, series) -> None:  # noqa: ANN001
    _embed(keyed_server.url, key)
    httpx.post(f"{keyed_server.v1}/embeddings", json={"model": MODEL, "input": "x"})  # a 401
    pattern = (
        rf"^{re.escape(series)}[0-9a-f]{{12}}\"}} [0-9.e+-]+$"
        if series.endswith("@")
        else (rf"^{re.escape(series)} [0-9.e+-]+$")
    )
    # request series are counted just after the answer is sent
    assert wait_for(lambda: re.search(pattern, _metrics(keyed_server.url), re.M)), series


def test_cache_hits_are_counted(keyed_server, key) -> None:  # noqa: ANN001
    def hits() -> float:
        found = re.search(
            r'^keepwarm_cache_lookups_total{result="hit"} (\S+)$', _metrics(keyed_server.url), re.M
        )
        return float(found.group(1)) if found else 0.0

    before = hits()
    _embed(keyed_server.url, key, "asked twice for the cache")
    _embed(keyed_server.url, key, "asked twice for the cache")
    assert hits() - before >= 2


def test_request_counter_and_tokens_count_each_answer(keyed_server, key) -> None:  # noqa: ANN001
    def read(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    requests = f'keepwarm_requests_total{{model="{MODEL}",route="/v1/embeddings",status="200"}}'
    tokens = f'keepwarm_request_tokens_total{{model="{MODEL}"}}'
    before = _metrics(keyed_server.url)
    answer = _embed(keyed_server.url, key, "count me")
    # the request is counted just after its answer is sent
    assert wait_for(lambda: read(_metrics(keyed_server.url), requests) - read(before, requests) >= 1)
    after = _metrics(keyed_server.url)
    assert read(after, requests) - read(before, requests) == 1
    assert read(after, tokens) - read(before, tokens) == answer.json()["usage"]["total_tokens"]


def _log_lines(server) -> list[dict]:  # noqa: ANN001
    # split on "\n" only: a JSON string may hold U+2028 or U+0085 unescaped (the fuzz test sends
    # such paths), and str.splitlines() would cut the line there
    # (and only lines the server finished writing: those that end in a newline)
    return [json.loads(line) for line in server.logs().split("\n")[:-1] if line.strip()]


def test_every_log_line_is_json(keyed_server, key) -> None:  # noqa: ANN001
    _embed(keyed_server.url, key)
    for odd in ("%E2%80%A8", "%C2%85", "%0A", "%22%5C"):  # line and paragraph separators, newline, quote
        httpx.get(f"{keyed_server.url}/v1/models/x{odd}y", headers={"Authorization": f"Bearer {key}"})
    # the access line is written after the answer: wait for the last request's
    assert wait_for(lambda: any(line.get("path") == '/v1/models/x"\\y' for line in _log_lines(keyed_server)))
    lines = _log_lines(keyed_server)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line.get("path") == "/v1/models/x\u2028y" for line in lines)


def test_each_request_logs_one_line_without_key_or_input_text(keyed_server, key) -> None:  # noqa: ANN001
    secret_text = "the-private-input-text-7f3a"
    answer = _embed(keyed_server.url, key, secret_text, **{"X-Request-ID": "log-check-1"})

    def logged() -> list[dict]:
        return [line for line in _log_lines(keyed_server) if line.get("request_id") == "log-check-1"]

    assert wait_for(logged)
    [line] = logged()
    assert line["logger"] == "keepwarm.access" and line["status"] == 200 and line["path"] == "/v1/embeddings"
    assert line["model"] == MODEL and line["key"].startswith("observed (kw-")
    assert line["tokens"] == answer.json()["usage"]["total_tokens"] and line["inputs"] == 2
    assert {"duration_ms", "queue_ms", "inference_ms", "tokenization_ms"} <= set(line)
    logs = keyed_server.logs()
    assert secret_text not in logs and key not in logs and key[11:] not in logs
