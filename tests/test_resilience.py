"""Staying up: draining on SIGTERM, a broken input failing only its own request, queue deadlines."""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers import MODEL, RunningServer, assert_same_vectors, metric, start_server, wait_for
from helpers.models import tiny_bert


def _busy(count: int) -> list[str]:
    """Distinct texts of ~200 tokens (distinct, so neither the cache nor deduplication skips any)."""
    return [f"keep the model busy with text number {i}, " * 20 for i in range(count)]


BUSY = _busy(60)


def _post(url: str, model: str, inputs: list, **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": inputs, **extra}, timeout=300)


def _start_busy(pool: ThreadPoolExecutor, server: RunningServer, model: str, inputs: list):  # noqa: ANN202
    """Send a long request and return its future once the model is working on it."""
    future = pool.submit(_post, server.url, model, inputs, truncate=True)
    assert wait_for(lambda: metric(server, "keepwarm_queue_tokens") > 0 or future.done())
    assert not future.done(), "the busy request finished too soon to test anything"
    return future


def test_sigterm_drains_in_flight_work_then_exits_cleanly(server, data_dir, log_dir, reference) -> None:  # noqa: ANN001
    running = start_server(data_dir, log_dir, "--grace-seconds", "120")
    with ThreadPoolExecutor(1) as pool:
        busy = _start_busy(pool, running, MODEL, BUSY)
        running.process.send_signal(signal.SIGTERM)
        assert wait_for(lambda: httpx.get(f"{running.url}/ready").status_code == 503)
        assert httpx.get(f"{running.url}/health").status_code == 200
        refused = _post(running.url, MODEL, ["arrived after SIGTERM"])
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "service_unavailable"
        assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
        answer = busy.result()
    assert answer.status_code == 200
    assert_same_vectors(np.array([d["embedding"] for d in answer.json()["data"]]), reference.encode(BUSY))
    assert running.process.wait(timeout=30) == 0
    assert "stop requested: draining (1 request(s) in flight" in running.logs()


def test_work_past_the_grace_time_is_cancelled_and_the_exit_says_so(server, data_dir, log_dir) -> None:  # noqa: ANN001
    running = start_server(data_dir, log_dir, "--grace-seconds", "1")
    with ThreadPoolExecutor(1) as pool:
        busy = _start_busy(pool, running, MODEL, _busy(600))  # 15 s of work on an idle machine
        running.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        cut_off = busy.result()
        assert running.process.wait(timeout=60) == 1
        # the grace second, plus finishing the model call under way (seconds when the machine is busy)
        assert time.monotonic() - stopped < 20
    assert cut_off.status_code == 503 and cut_off.json()["error"]["code"] == "service_unavailable"
    assert "grace time over: cancelling 1 request(s)" in running.logs()


@pytest.fixture(scope="module")
def fragile_server(data_dir, log_dir, model_dir, tmp_path_factory):  # noqa: ANN001, ANN201
    """A tiny model whose embedding table is smaller than its tokenizer's vocabulary (1000 of 30522 ids).

    With `token_ids = "model"`, ids 1000..30521 pass validation but make ONNX Runtime fail
    in the model's Gather: a real runtime fault for exactly the inputs that carry them.
    (The runtime is pinned: another runtime might clamp such ids instead of failing.)
    """
    root = tmp_path_factory.mktemp("fragile")
    directory = tiny_bert(root / "model", model_dir, max_seq_length=512, vocab_size=1000, seed=5)
    config = root / "models.toml"
    config.write_text(
        f'[[models]]\nname = "fragile"\nsource = "{directory}"\ntoken_ids = "model"\nruntime = "onnx"\n'
    )
    running = start_server(data_dir, log_dir, "--config", str(config), "--cache-mb", "0")  # every call computes
    yield running
    running.stop()


def test_a_broken_input_fails_only_its_own_request(fragile_server) -> None:  # noqa: ANN001
    server = fragile_server
    good = [[[101, 100 + n, 200 + n, 102]] for n in range(8)]
    poisoned = [[101, 5000, 102]]
    busy_ids = [[101] + [300 + i % 600] * 510 + [102] for i in range(150)]
    failures_before = metric(server, "keepwarm_inference_failures_total")
    with ThreadPoolExecutor(10) as pool:
        busy = _start_busy(pool, server, "fragile", busy_ids)  # everything below queues up behind it
        answers = list(pool.map(lambda inputs: _post(server.url, "fragile", inputs), [*good, poisoned]))
        assert busy.result().status_code == 200
    *good_answers, bad_answer = answers
    assert bad_answer.status_code == 503, bad_answer.text
    error = bad_answer.json()["error"]
    assert error["code"] == "service_unavailable" and "inference failed" in error["message"]
    assert bad_answer.headers["retry-after"] == "1"
    assert [a.status_code for a in good_answers] == [200] * 8
    # the poisoned input shared a batch with others: the batch failed, then its halves, down to the culprit
    assert metric(server, "keepwarm_inference_failures_total") - failures_before >= 2
    for inputs, answer in zip(good, good_answers):
        alone = _post(server.url, "fragile", inputs)
        assert_same_vectors(np.array([answer.json()["data"][0]["embedding"]]),
                            np.array([alone.json()["data"][0]["embedding"]]))


def test_a_request_that_waited_past_the_deadline_is_dropped_uncomputed(server, data_dir, log_dir) -> None:  # noqa: ANN001
    running = start_server(data_dir, log_dir, "--queue-timeout", "0.5")
    try:
        with ThreadPoolExecutor(1) as pool:
            busy = _start_busy(pool, running, MODEL, BUSY)
            dropped_before = metric(running, "keepwarm_inputs_dropped_total")
            late = _post(running.url, MODEL, ["waits behind the busy request", "and is dropped"])
            assert busy.result().status_code == 200
        assert late.status_code == 503, late.text
        error = late.json()["error"]
        assert error["code"] == "deadline_exceeded" and "limit of 0.5s" in error["message"]
        assert int(late.headers["retry-after"]) >= 1
        assert metric(running, "keepwarm_inputs_dropped_total") - dropped_before == 2
        assert _post(running.url, MODEL, ["served again once the queue is short"]).status_code == 200
    finally:
        running.stop()


def test_a_client_hanging_up_mid_body_is_not_a_server_error(server) -> None:  # noqa: ANN001
    before = metric(server, "keepwarm_request_errors_total")
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n" + b'{"model": "all-minilm-l6-v2", "input": ["only part')
    assert wait_for(lambda: metric(server, "keepwarm_request_errors_total") > before)
    text = httpx.get(f"{server.url}/metrics").text
    assert not re.search(r'^keepwarm_requests_total{[^}]*route="/v1/embeddings"[^}]*status="5', text, re.M)
    assert 'keepwarm_request_errors_total{code="client_disconnected",model=""}' in text
    assert "Traceback" not in server.logs()
