"""Under concurrent load each caller gets exactly its own vectors; overload and hang-ups are handled."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson
import pytest
from helpers import MODEL, assert_same_vectors, metric, start_server, wait_for


def _embed(url: str, texts: list[str]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/embeddings", json={"model": MODEL, "input": texts, "truncate": True}, timeout=300
    )


def _vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def test_simultaneous_requests_each_get_their_own_vectors(server, reference, corpus) -> None:  # noqa: ANN001
    # 48 requests of 1..5 texts of very different lengths, all in flight at once
    requests = [corpus[i : i + 1 + i % 5] for i in range(48)]
    with ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(lambda texts: _embed(server.url, texts), requests))
    expected = reference.encode(sorted({t for texts in requests for t in texts}))
    by_text = dict(zip(sorted({t for texts in requests for t in texts}), expected, strict=True))
    for texts, response in zip(requests, responses, strict=True):
        assert_same_vectors(_vectors(response), np.array([by_text[t] for t in texts]))


@pytest.fixture(scope="module")
def small_queue_server(data_dir, log_dir):  # noqa: ANN001, ANN201
    running = start_server(
        data_dir, log_dir, "--max-queue-tokens", "3000", "--max-batch-size", "4", holdable=True
    )
    yield running
    running.stop()


def test_full_queue_answers_429_with_retry_after(small_queue_server, reference) -> None:  # noqa: ANN001
    server = small_queue_server
    # two requests of 16 distinct ~125-token texts: the 3000-token queue holds one of them, not both
    first, second = (
        [f"request {n} part {i}: " + "words to embed " * 40 for i in range(16)] for n in range(2)
    )
    with ThreadPoolExecutor(1) as pool, server.holding():  # released before the pool waits for `queued`
        queued = pool.submit(_embed, server.url, first)
        assert wait_for(lambda: metric(server, "keepwarm_queue_tokens") > 1500)
        refused = _embed(server.url, second)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["code"] == "server_overloaded" and "overloaded" in error["message"]
    assert_same_vectors(_vectors(queued.result()), reference.encode(first))


@pytest.fixture(scope="module")
def small_batch_server(data_dir, log_dir):  # noqa: ANN001, ANN201
    running = start_server(data_dir, log_dir, "--max-batch-size", "4", holdable=True)
    yield running
    running.stop()


def test_work_of_a_disconnected_client_is_dropped(small_batch_server, reference) -> None:  # noqa: ANN001
    server = small_batch_server
    url = server.url
    before = metric(server, "keepwarm_inputs_dropped_total")
    busy = [f"keep the model busy {i} " * 30 for i in range(40)]  # queued work ahead of the one that hangs up
    body = orjson.dumps({"model": MODEL, "input": [f"abandoned {i}" for i in range(12)]})
    with ThreadPoolExecutor(1) as pool, server.holding():
        ahead = pool.submit(_embed, url, busy)
        assert wait_for(lambda: metric(server, "keepwarm_queue_tokens") > 0)
        queued = metric(server, "keepwarm_queue_tokens")
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as raw:
            raw.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert wait_for(
                lambda: metric(server, "keepwarm_queue_tokens") > queued
            )  # the abandoned work waits
        assert wait_for(lambda: metric(server, "keepwarm_inputs_dropped_total") >= before + 12)
        assert metric(server, "keepwarm_queue_tokens") == queued  # only the hung-up client's inputs left
    assert_same_vectors(_vectors(ahead.result()), reference.encode(busy))
    assert _embed(url, ["still serving"]).status_code == 200
