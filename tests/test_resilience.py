"""Staying up: draining on SIGTERM, a broken input failing only its own request, queue deadlines,
and connections that try to hold the server with huge, endless or stalled requests.

Slowness is made deterministic by holding the model workers (`server.holding()`): held
work stays queued, in flight and subject to its deadline for as long as a test needs.
Raw-socket tests stay on loopback and every loop is bounded.
"""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers import MODEL, RunningServer, assert_same_vectors, metric, start_server, wait_for
from helpers.models import tiny_bert

TEXTS = ["the first text held in the queue", "and a second one"]


def _post(url: str, model: str, inputs: list, **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": inputs, **extra}, timeout=300)


def _queue(pool: ThreadPoolExecutor, server: RunningServer, model: str, inputs: list) -> Future:
    """Send a request to a held server and return its future once its inputs are queued."""
    before = metric(server, "keepwarm_queue_tokens")
    future = pool.submit(_post, server.url, model, inputs)
    assert wait_for(lambda: metric(server, "keepwarm_queue_tokens") > before or future.done())
    assert not future.done(), future.result().text
    return future


def test_sigterm_drains_in_flight_work_then_exits_cleanly(server, data_dir, log_dir, reference) -> None:  # noqa: ANN001
    running = start_server(data_dir, log_dir, "--grace-seconds", "120", holdable=True)
    with ThreadPoolExecutor(1) as pool:
        with running.holding():
            held = _queue(pool, running, MODEL, TEXTS)
            running.process.send_signal(signal.SIGTERM)
            assert wait_for(lambda: httpx.get(f"{running.url}/ready").status_code == 503)
            assert httpx.get(f"{running.url}/health").status_code == 200
            refused = _post(running.url, MODEL, ["arrived after SIGTERM"])
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "service_unavailable"
            assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"
            assert not held.done()  # accepted work is waited for, however long it takes
        answer = held.result()
    assert answer.status_code == 200
    assert_same_vectors(np.array([d["embedding"] for d in answer.json()["data"]]), reference.encode(TEXTS))
    assert running.process.wait(timeout=60) == 0
    assert "stop requested: draining (1 request(s) in flight" in running.logs()


def test_drain_seconds_keep_an_idle_server_answering_503_before_it_exits(server, data_dir, log_dir) -> None:  # noqa: ANN001
    running = start_server(data_dir, log_dir, "--drain-seconds", "3")
    stopped = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    # nothing is in flight, yet the socket stays open, answering 503
    assert wait_for(lambda: httpx.get(f"{running.url}/ready").status_code == 503)
    refused = _post(running.url, MODEL, ["arrived while draining"])
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "service_unavailable"
    assert running.process.wait(timeout=60) == 0
    assert time.monotonic() - stopped >= 3  # a lower bound: the drain time, never shorter


def test_work_past_the_grace_time_is_cancelled_and_the_exit_says_so(server, data_dir, log_dir) -> None:  # noqa: ANN001
    running = start_server(data_dir, log_dir, "--grace-seconds", "1", holdable=True)
    with ThreadPoolExecutor(1) as pool, running.holding():  # the held work can never finish in time
        held = _queue(pool, running, MODEL, TEXTS)
        running.process.send_signal(signal.SIGTERM)
        cut_off = held.result()
        assert running.process.wait(timeout=60) == 1
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
    # --cache-mb 0: every call computes, so an answer can be compared with the same input embedded alone
    running = start_server(data_dir, log_dir, "--config", str(config), "--cache-mb", "0", holdable=True)
    yield running
    running.stop()


def test_a_broken_input_fails_only_its_own_request(fragile_server) -> None:  # noqa: ANN001
    server = fragile_server
    good = [[[101, 100 + n, 200 + n, 102]] for n in range(8)]
    poisoned = [[101, 5000, 5001, 102]]  # as long as the others: no padding is needed to batch them
    failures_before = metric(server, "keepwarm_inference_failures_total")
    with ThreadPoolExecutor(9) as pool:
        with server.holding():  # all nine queue up, then run together in one model call
            futures = [pool.submit(_post, server.url, "fragile", inputs) for inputs in [*good, poisoned]]
            queued = sum(len(ids) for inputs in [*good, poisoned] for ids in inputs)
            assert wait_for(lambda: metric(server, "keepwarm_queue_tokens") == queued)
        *good_answers, bad_answer = [future.result() for future in futures]
    assert bad_answer.status_code == 503, bad_answer.text
    error = bad_answer.json()["error"]
    assert error["code"] == "service_unavailable" and "inference failed" in error["message"]
    assert "Error" not in error["message"] and "Exception" not in error["message"]  # no exception class names
    assert bad_answer.headers["retry-after"] == "1"
    assert [a.status_code for a in good_answers] == [200] * 8
    # the poisoned input shared a batch with others: the batch failed, then its halves, down to the culprit
    assert metric(server, "keepwarm_inference_failures_total") - failures_before >= 2
    for inputs, answer in zip(good, good_answers, strict=True):
        alone = _post(server.url, "fragile", inputs)
        assert_same_vectors(
            np.array([answer.json()["data"][0]["embedding"]]),
            np.array([alone.json()["data"][0]["embedding"]]),
        )


# -- abusive connections --------------------------------------------------------------------------

MAX_CONNECTIONS = 4
MAX_HEADER_BYTES = 8 * 1024
TIMEOUT = 1.0  # header and body timeouts
MIN_BODY_RATE = 1000


@pytest.fixture(scope="module")
def guarded_server(server, data_dir, log_dir):  # noqa: ANN001, ANN201
    """Small connection limits, short timeouts, and a queue deadline of half a second."""
    running = start_server(
        data_dir,
        log_dir,
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--max-header-kb",
        str(MAX_HEADER_BYTES // 1024),
        "--header-timeout",
        str(TIMEOUT),
        "--body-timeout",
        str(TIMEOUT),
        "--min-body-rate",
        str(MIN_BODY_RATE),
        "--keep-alive-timeout",
        "120",
        "--queue-timeout",
        "0.5",
        holdable=True,
    )
    yield running
    running.stop()


def _connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=30)


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """Read a whole answer up to the server's close: its status and JSON body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _cut(server: RunningServer, reason: str) -> float:
    return metric(server, f'keepwarm_connections_cut_total{{reason="{reason}"}}')


def _rss_mb(server: RunningServer) -> float:
    status = open(f"/proc/{server.process.pid}/status").read()  # noqa: SIM115 - one read
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def test_a_request_that_waited_past_the_deadline_is_dropped_uncomputed(guarded_server) -> None:  # noqa: ANN001
    server = guarded_server
    dropped_before = metric(server, "keepwarm_inputs_dropped_total")
    with ThreadPoolExecutor(1) as pool:
        with server.holding():
            late = _queue(pool, server, MODEL, ["waits in the queue", "and is dropped"])
            queued = time.monotonic()  # the request was queued before this moment
            # the deadline is a duration: hold until it has surely passed, then let the worker reach it
            assert wait_for(lambda: time.monotonic() - queued > 0.6)
        late = late.result()
    assert late.status_code == 503, late.text
    error = late.json()["error"]
    assert error["code"] == "deadline_exceeded" and "limit of 0.5s" in error["message"]
    assert int(late.headers["retry-after"]) >= 1
    assert metric(server, "keepwarm_inputs_dropped_total") - dropped_before == 2
    assert _post(server.url, MODEL, ["served again once the queue is short"]).status_code == 200


def test_headers_over_the_limit_are_431(guarded_server) -> None:  # noqa: ANN001
    with _connect(guarded_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n")
        status, body = _answer(sock)
    assert status == 431 and body["error"]["code"] == "headers_too_large"
    assert str(MAX_HEADER_BYTES) in body["error"]["message"]


def test_an_endless_header_is_cut_off_early_holding_little_memory(guarded_server) -> None:  # noqa: ANN001
    """Up to 300 MB of header that never ends: the server answers 431 after its limit and drops the rest."""
    server = guarded_server
    cut_before, rss_before = _cut(server, "header_too_large"), _rss_mb(server)
    chunk = b"a" * 65536
    sent, answer = 0, b""
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sock.setblocking(False)
        for _ in range(300 * 16):  # at most 300 MiB
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                select.select([sock], [sock], [], 1)
            except OSError:  # closed by the server after its answer
                break
            if select.select([sock], [], [], 0)[0]:
                answer = sock.recv(65536)
                break
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert sent < 32 * 2**20  # cut off after the limit (and what socket buffers hold), not after 300 MB
    assert wait_for(lambda: _cut(server, "header_too_large") == cut_before + 1)
    assert _rss_mb(server) - rss_before < 32


def test_a_connection_that_sends_nothing_is_closed_with_408(guarded_server) -> None:  # noqa: ANN001
    with _connect(guarded_server) as sock:
        status, body = _answer(sock)
    assert status == 408 and body["error"]["code"] == "request_timeout"


def test_a_trickled_request_head_is_cut_off_at_the_header_timeout(guarded_server) -> None:  # noqa: ANN001
    """However slowly bytes come, the head has `--header-timeout` seconds in all (slowloris)."""
    server = guarded_server
    before = _cut(server, "header_timeout")
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        for number in range(200):  # a header line every 0.1 s: never a pause long enough to time out
            if select.select([sock], [], [], 0.1)[0]:
                break
            sock.sendall(b"X-Trickle-%d: 1\r\n" % number)
        status, body = _answer(sock)
    assert status == 408 and "headers did not arrive" in body["error"]["message"]
    assert _cut(server, "header_timeout") == before + 1


def _post_head(length: int) -> bytes:
    return (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_a_body_that_stops_arriving_is_408(guarded_server) -> None:  # noqa: ANN001
    server = guarded_server
    before = _cut(server, "body_timeout")
    with _connect(server) as sock:
        sock.sendall(_post_head(1000) + b'{"model": "' + MODEL.encode() + b'", "input": ["only part')
        status, body = _answer(sock)
    assert status == 408 and "stopped arriving" in body["error"]["message"]
    assert _cut(server, "body_timeout") == before + 1


def test_a_trickled_body_is_cut_off_below_the_minimum_rate(guarded_server) -> None:  # noqa: ANN001
    server = guarded_server
    before = _cut(server, "body_timeout")
    with _connect(server) as sock:
        sock.sendall(_post_head(100_000))
        for _ in range(300):  # 10 bytes every 0.05 s: 200 bytes/s, never a pause of a whole timeout
            if select.select([sock], [], [], 0.05)[0]:
                break
            sock.sendall(b" " * 10)
        status, body = _answer(sock)
    assert status == 408 and "slower than 1000 bytes/s" in body["error"]["message"]
    assert _cut(server, "body_timeout") == before + 1


def test_connections_over_the_cap_get_503_and_the_rest_are_served(guarded_server) -> None:  # noqa: ANN001
    server = guarded_server
    clients = [httpx.Client(base_url=server.url, timeout=60) for _ in range(MAX_CONNECTIONS)]
    try:
        observer = clients[0]

        def read(name: str) -> float:  # as `metric` does, but over the observer's own connection
            found = re.search(rf"^{re.escape(name)} (\S+)$", observer.get("/metrics").text, re.M)
            return float(found.group(1)) if found else 0.0

        assert wait_for(lambda: read("keepwarm_connections_open") == 1)  # only the observer's connection
        cut_before = read('keepwarm_connections_cut_total{reason="too_many_connections"}')
        for client in clients[1:]:  # each keeps its connection open between requests (keep-alive)
            assert client.get("/health").status_code == 200
        assert read("keepwarm_connections_open") == MAX_CONNECTIONS
        refused = []
        for _ in range(2):
            with _connect(server) as sock:
                refused.append(_answer(sock))
        assert [status for status, _ in refused] == [503, 503]
        assert refused[0][1]["error"]["code"] == "service_unavailable"
        assert read('keepwarm_connections_cut_total{reason="too_many_connections"}') == cut_before + 2
        assert all(
            client.get("/health").status_code == 200 for client in clients
        )  # the open ones still serve
    finally:
        for client in clients:
            client.close()


def test_a_client_hanging_up_mid_body_is_not_a_server_error(server) -> None:  # noqa: ANN001
    before = metric(server, "keepwarm_request_errors_total")
    with _connect(server) as sock:
        sock.sendall(_post_head(100_000) + b'{"model": "all-minilm-l6-v2", "input": ["only part')
    assert wait_for(lambda: metric(server, "keepwarm_request_errors_total") > before)
    text = httpx.get(f"{server.url}/metrics").text
    assert not re.search(r'^keepwarm_requests_total{[^}]*route="/v1/embeddings"[^}]*status="5', text, re.M)
    assert 'keepwarm_request_errors_total{code="client_disconnected",model=""}' in text
    assert "Traceback" not in server.logs()
