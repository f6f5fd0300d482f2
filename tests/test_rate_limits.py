"""Per-key requests and tokens per minute: 429 rate_limit_exceeded, Retry-After and x-ratelimit-* headers."""

from __future__ import annotations

import json

import httpx
import pytest
from helpers import MODEL, create_key, keepwarm

from keepwarm.api.limits import RateLimiter, format_duration
from keepwarm.errors import RateLimited
from keepwarm.store import ApiKey


def _embed(url: str, key: str, text: str = "hello") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/embeddings",
        json={"model": MODEL, "input": text},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _rate_limited(response: httpx.Response, limit: str) -> dict:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == limit
    assert "overloaded" not in error["message"]  # distinguishable from a full queue (server_overloaded)
    return error


def test_requests_over_the_rpm_get_429_with_retry_after(keyed_server) -> None:  # noqa: ANN001
    key = create_key(keyed_server.data_dir, "rpm-3", "--rpm", "3")
    answers = [_embed(keyed_server.url, key) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
    error = _rate_limited(answers[3], "requests")
    assert "Limit 3" in error["message"]
    assert 1 <= int(answers[3].headers["retry-after"]) <= 20  # one request refills in 60/3 s
    assert answers[3].headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_over_the_tpm_get_429(keyed_server) -> None:  # noqa: ANN001
    key = create_key(keyed_server.data_dir, "tpm-40", "--tpm", "40")
    # 17 tokens
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    first = _embed(keyed_server.url, key, text)
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] == 17
    assert first.headers["x-ratelimit-limit-tokens"] == "40"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) in (23, 24)
    assert _embed(keyed_server.url, key, text).status_code == 200
    refused = _embed(keyed_server.url, key, text)
    error = _rate_limited(refused, "tokens")
    assert "Requested 17" in error["message"] and int(refused.headers["retry-after"]) >= 1


def test_a_request_larger_than_the_tpm_is_refused_without_retry_after(keyed_server) -> None:  # noqa: ANN001
    key = create_key(keyed_server.data_dir, "tpm-5", "--tpm", "5")
    refused = _embed(keyed_server.url, key, "a sentence with more than five tokens in it")
    error = _rate_limited(refused, "tokens")
    assert error["message"].startswith("Request too large") and "retry-after" not in refused.headers


def test_unlimited_keys_get_no_rate_limit_headers(keyed_server) -> None:  # noqa: ANN001
    answer = _embed(keyed_server.url, create_key(keyed_server.data_dir, "unlimited"))
    assert answer.status_code == 200 and not any(h.startswith("x-ratelimit") for h in answer.headers)


def test_limits_are_per_key(keyed_server) -> None:  # noqa: ANN001
    first = create_key(keyed_server.data_dir, "per-key-a", "--rpm", "1")
    second = create_key(keyed_server.data_dir, "per-key-b", "--rpm", "1")
    assert _embed(keyed_server.url, first).status_code == 200
    assert _embed(keyed_server.url, first).status_code == 429
    assert _embed(keyed_server.url, second).status_code == 200


def _metered_requests(data_dir, name: str) -> int:  # noqa: ANN001
    report = json.loads(keepwarm("usage", "--json", "--key", name, "--data-dir", str(data_dir)).stdout)
    return report["total"]["requests"]


def test_rate_limited_requests_are_not_metered(keyed_server) -> None:  # noqa: ANN001
    rpm = create_key(keyed_server.data_dir, "metered-rpm", "--rpm", "1")
    assert _embed(keyed_server.url, rpm).status_code == 200
    _rate_limited(_embed(keyed_server.url, rpm), "requests")
    tpm = create_key(keyed_server.data_dir, "metered-tpm", "--tpm", "5")
    _rate_limited(_embed(keyed_server.url, tpm, "a sentence with more than five tokens in it"), "tokens")
    assert _metered_requests(keyed_server.data_dir, "metered-rpm") == 1  # the answered one only
    assert _metered_requests(keyed_server.data_dir, "metered-tpm") == 0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_per_minute_rate() -> None:
    clock = _Clock()
    limiter = RateLimiter(clock)
    key = ApiKey(id=1, name="k", prefix="kw-x", rpm=60)
    for _ in range(60):
        limiter.check_request(key)
    with pytest.raises(RateLimited) as refused:
        limiter.check_request(key)
    assert refused.value.retry_after == pytest.approx(1.0)
    clock.now = 1.0
    limiter.check_request(key)  # one request per second comes back
    clock.now = 1000.0
    assert limiter.headers(key)["x-ratelimit-remaining-requests"] == "60"  # never above the limit


def test_a_limit_changed_while_the_server_runs_applies_to_the_next_request() -> None:
    clock = _Clock()
    limiter = RateLimiter(clock)
    limiter.check_request(ApiKey(id=1, name="k", prefix="kw-x", rpm=60))
    lowered = ApiKey(id=1, name="k", prefix="kw-x", rpm=2)
    assert limiter.headers(lowered)["x-ratelimit-remaining-requests"] == "2"  # 59 left, capped at the limit
    limiter.check_request(lowered)
    limiter.check_request(lowered)
    with pytest.raises(RateLimited):
        limiter.check_request(lowered)
    raised = ApiKey(id=1, name="k", prefix="kw-x", rpm=600)
    assert limiter.headers(raised)["x-ratelimit-limit-requests"] == "600"
    clock.now = 0.1  # from now on it refills at the new rate: 10 requests a second
    limiter.check_request(raised)


@pytest.mark.parametrize("seconds,text", [(0.02, "20ms"), (1.5, "1.5s"), (20, "20s"), (360, "6m0s")])
def test_reset_times_use_openais_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
