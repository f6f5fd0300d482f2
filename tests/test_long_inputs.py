"""A long input costs what the model reads of it, not what the client sent: against a real server.

Times are compared with requests measured in the same test (never with absolute speeds): a
15-million-character input is answered about as fast as the same body refused unread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from helpers import MODEL, RunningServer, start_server

LONG = "a" * 15_000_000  # one run without spaces: 3 tokens, truncated or not
NORMAL = "The quick brown fox jumps over the lazy dog. " * 30


@pytest.fixture(scope="module")
def roomy_server(server, data_dir: Path, log_dir: Path) -> Iterator[RunningServer]:  # noqa: ANN001 - `server` built the artifacts
    """A server whose inputs may be 20 million characters long, so the tokenizer meets the long ones."""
    running = start_server(data_dir, log_dir, "--max-input-chars", "20000000")
    yield running
    running.stop()


def _post(server: RunningServer, body: dict) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = httpx.post(
        f"{server.url}/v1/embeddings",
        content=orjson.dumps(body),
        headers={"content-type": "application/json"},
        timeout=120,
    )
    return time.perf_counter() - started, response


def _fastest(server: RunningServer, body: dict, status: int, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        seconds, response = _post(server, body)
        assert response.status_code == status, response.text
        times.append(seconds)
    return min(times)


def _memory(server: RunningServer, field: str) -> int:
    """A memory figure of the server process from /proc, in bytes."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for the server process")


def test_a_long_run_truncated_costs_about_what_reading_its_body_costs(roomy_server: RunningServer) -> None:
    server = roomy_server
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # the peak RSS starts again from now
    before = _memory(server, "VmRSS")
    _, response = _post(server, {"model": MODEL, "input": [LONG], "truncate": True})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 3
    grown = _memory(server, "VmHWM") - before
    assert grown < 200 * 2**20, (
        f"the server's memory peaked {grown >> 20} MiB higher"
    )  # tokenizing it all: ~700
    normal = _fastest(server, {"model": MODEL, "input": [NORMAL], "truncate": True}, 200)
    unread = _fastest(server, {"model": "no-such-model", "input": [LONG], "truncate": True}, 404)
    truncated = _fastest(server, {"model": MODEL, "input": [LONG], "truncate": True}, 200)
    assert truncated < 3 * (unread + normal), (truncated, unread, normal)  # tokenizing it all: seconds more


def test_a_long_run_not_truncated_is_refused_without_reading_it_all(roomy_server: RunningServer) -> None:
    server = roomy_server
    _, response = _post(server, {"model": MODEL, "input": ["short", LONG], "truncate": False})
    error = response.json()["error"]
    assert (
        response.status_code == 400
        and error["param"] == "input[1]"
        and error["code"] == "context_length_exceeded"
    )
    normal = _fastest(server, {"model": MODEL, "input": [NORMAL], "truncate": True}, 200)
    unread = _fastest(server, {"model": "no-such-model", "input": [LONG], "truncate": False}, 404)
    refused = _fastest(server, {"model": MODEL, "input": [LONG], "truncate": False}, 400)
    assert refused < 3 * (unread + normal), (refused, unread, normal)


def test_an_input_over_the_character_limit_is_refused_with_400(server: RunningServer) -> None:
    too_long = "word " * 200_001  # 1,000,005 characters: over the default limit of 1,000,000
    _, response = _post(server, {"model": MODEL, "input": ["fine", too_long], "truncate": True})
    error = response.json()["error"]
    assert response.status_code == 400
    assert (
        error["param"] == "input[1]"
        and error["code"] == "input_too_large"
        and error["type"] == "invalid_request_error"
    )
    assert "1,000,005 characters" in error["message"] and "1,000,000" in error["message"]
