"""Usage metering per key, model, version and day: exact, reported by CLI and admin route, durable."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import MODEL, create_key, keepwarm, start_server, state_dir


def _embed(url: str, key: str, texts: list[str] | str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/embeddings",
        json={"model": MODEL, "input": texts},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def _usage(data_dir: Path, *options: str) -> dict:
    return json.loads(keepwarm("usage", "--json", "--data-dir", str(data_dir), *options).stdout)


@pytest.fixture(scope="module")
def metered(keyed_server):  # noqa: ANN001, ANN201
    """Three answered requests and two refused ones by the key 'metered'; the tokens the answers reported.

    The third request repeats an input of the first, which the embedding cache answers.
    """
    key = create_key(keyed_server.data_dir, "metered")
    texts = (
        "metering: the first text",
        ["metering: two", "metering: texts here"],
        "metering: the first text",
    )
    answers = [_embed(keyed_server.url, key, t) for t in texts]
    assert all(a.status_code == 200 for a in answers)
    assert _embed(keyed_server.url, key, "").status_code == 400
    assert (
        httpx.post(
            f"{keyed_server.v1}/embeddings",
            json={"model": "nope", "input": "x"},
            headers={"Authorization": f"Bearer {key}"},
        ).status_code
        == 404
    )
    return sum(a.json()["usage"]["total_tokens"] for a in answers)


def test_answered_requests_are_metered_per_key_model_and_version(keyed_server, metered) -> None:  # noqa: ANN001
    report = _usage(keyed_server.data_dir, "--key", "metered")
    [row] = report["data"]
    version = httpx.get(
        f"{keyed_server.v1}/models/{MODEL}",
        headers={"Authorization": f"Bearer {create_key(keyed_server.data_dir, 'reader')}"},
    ).json()
    assert (row["key_name"], row["model"], row["version"]) == ("metered", MODEL, version["version"])
    assert row["requests"] == 3 and row["tokens"] == metered and row["cache_hits"] == 1
    assert row["compute_seconds"] > 0


def test_cli_prices_tokens_and_compute_hours(keyed_server, metered) -> None:  # noqa: ANN001
    by_tokens = _usage(keyed_server.data_dir, "--key", "metered", "--price-per-million-tokens", "1000000")
    assert by_tokens["total"]["cost"] == pytest.approx(metered)
    by_hours = _usage(keyed_server.data_dir, "--key", "metered", "--price-per-hour", "3600")
    assert by_hours["total"]["cost"] == pytest.approx(by_hours["total"]["compute_seconds"], abs=1e-5)


def test_cli_table_has_a_total_line(keyed_server, metered) -> None:  # noqa: ANN001
    lines = keepwarm(
        "usage", "--key", "metered", "--data-dir", str(keyed_server.data_dir)
    ).stdout.splitlines()
    assert lines[0].split()[:3] == ["DAY", "KEY", "MODEL"]
    assert lines[-1].split()[:3] == ["total", "3", str(metered)]


def test_admin_route_reports_usage_at_the_servers_price(keyed_server, metered) -> None:  # noqa: ANN001
    admin = create_key(keyed_server.data_dir, "usage-admin", "--admin")
    response = httpx.get(
        f"{keyed_server.url}/admin/usage",
        params={"key": "metered"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    report = response.json()
    assert report["total"]["requests"] == 3 and report["total"]["tokens"] == metered
    assert report["pricing"]["per_million_tokens"] == 2 and report["total"]["cost"] == pytest.approx(
        metered * 2e-6
    )
    assert report == _usage(keyed_server.data_dir, "--key", "metered", "--price-per-million-tokens", "2")


def test_admin_route_filters_by_day(keyed_server, metered) -> None:  # noqa: ANN001
    admin = create_key(keyed_server.data_dir, "usage-admin-days", "--admin")
    headers = {"Authorization": f"Bearer {admin}"}
    url = f"{keyed_server.url}/admin/usage"
    assert httpx.get(url, params={"until": "2000-01-01"}, headers=headers).json()["data"] == []
    bad = httpx.get(url, params={"since": "yesterday"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


def _db_usage(data_dir: Path) -> tuple[int, int]:
    with sqlite3.connect(data_dir / "keepwarm.db") as conn:
        requests, tokens = conn.execute(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(tokens), 0) FROM usage"
        ).fetchone()
    return requests, tokens


def test_kill_9_right_after_answers_loses_no_usage(server, data_dir, log_dir, tmp_path) -> None:  # noqa: ANN001
    """SIGKILL as soon as half the answers arrived: every answered request is already in the database."""
    running = start_server(state_dir(data_dir, tmp_path / "data"), log_dir)
    key = create_key(running.data_dir, "killed")
    answered: list[int] = []
    half = threading.Event()

    def call(n: int) -> None:
        try:
            response = _embed(running.url, key, [f"request {n} asks for its vectors"] * 4)
        except httpx.TransportError:
            return  # the server died first: not answered
        if response.status_code == 200:
            answered.append(response.json()["usage"]["total_tokens"])
            if len(answered) >= 12:
                half.set()

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(call, n) for n in range(24)]
        assert half.wait(120)
        running.process.send_signal(signal.SIGKILL)
        answered_now = list(answered)
        for future in futures:
            future.result()
    running.process.wait()
    requests, tokens = _db_usage(running.data_dir)
    assert requests >= len(answered) >= len(answered_now) >= 12
    assert tokens >= sum(answered)
    assert tokens == requests * answered[0]  # every request costs the same: no partial rows
