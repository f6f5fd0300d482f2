"""The OpenAI Batch API for /v1/embeddings, driven by the official client against a real server."""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from helpers import MODEL, RunningServer, assert_same_vectors, start_server, state_dir, wait_for
from helpers.batching import (
    client_for,
    embedding_lines,
    long_texts,
    peak_memory,
    request_line,
    reset_peak_memory,
    result_lines,
    submit,
    upload,
    wait_finished,
    wait_until,
)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def served(server, data_dir, log_dir, tmp_path_factory) -> Iterator[RunningServer]:  # noqa: ANN001
    """A server with a data directory of its own (no other test's server runs its batches), holdable."""
    own = state_dir(data_dir, tmp_path_factory.mktemp("batches") / "data")
    running = start_server(own, log_dir, "--batch-chunk-inputs", "8", holdable=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:  # noqa: ANN001
    return client_for(served)


@pytest.fixture(scope="module")
def long_inputs() -> list[str]:
    return long_texts(64)


def test_batch_runs_end_to_end_with_the_official_client(client, reference, corpus) -> None:  # noqa: ANN001
    texts = corpus[:30]
    batch = submit(client, embedding_lines(texts, truncate=True), metadata={"job": "nightly"})
    assert batch.status == "validating" and batch.object == "batch" and batch.metadata == {"job": "nightly"}
    done = wait_finished(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        30,
        30,
        0,
    )
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.model == MODEL
    lines = result_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in lines] == [f"req-{n}" for n in range(30)]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in lines)
    assert all(line["id"].startswith("batch_req_") and line["response"]["request_id"] for line in lines)
    vectors = [line["response"]["body"]["data"][0]["embedding"] for line in lines]
    assert_same_vectors(vectors, reference.encode(texts))
    assert done.usage.input_tokens == sum(
        line["response"]["body"]["usage"]["prompt_tokens"] for line in lines
    )


def test_line_bodies_get_the_same_options_as_the_embeddings_route(client) -> None:  # noqa: ANN001
    texts = ["alpha beta", "gamma delta"]
    lines = [
        request_line("b64", {"model": MODEL, "input": texts, "encoding_format": "base64", "dimensions": 64}),
        request_line("float", {"model": MODEL, "input": texts, "dimensions": 64}),
    ]
    done = wait_finished(client, submit(client, lines).id)
    bodies = {
        line["custom_id"]: line["response"]["body"] for line in result_lines(client, done.output_file_id)
    }
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in bodies["b64"]["data"]]
    as_float = np.array([d["embedding"] for d in bodies["float"]["data"]], dtype=np.float32)
    np.testing.assert_array_equal(np.array(decoded), as_float)
    assert as_float.shape == (2, 64)


def test_failed_requests_go_to_the_error_file_with_their_status(client) -> None:  # noqa: ANN001
    lines = [
        request_line("ok", {"model": MODEL, "input": "fine"}),
        request_line("empty", {"model": MODEL, "input": ""}),
        request_line("too-long", {"model": MODEL, "input": "word " * 600}),
        request_line("bad-dimensions", {"model": MODEL, "input": "x", "dimensions": 0}),
    ]
    done = wait_finished(client, submit(client, lines).id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 3)
    errors = {line["custom_id"]: line["response"] for line in result_lines(client, done.error_file_id)}
    assert set(errors) == {"empty", "too-long", "bad-dimensions"}
    assert all(
        e["status_code"] == 400 and set(e["body"]["error"]) == {"message", "type", "param", "code"}
        for e in errors.values()
    )
    assert errors["too-long"]["body"]["error"]["code"] == "context_length_exceeded"
    assert errors["bad-dimensions"]["body"]["error"]["param"] == "dimensions"
    assert [line["custom_id"] for line in result_lines(client, done.output_file_id)] == ["ok"]


@pytest.mark.parametrize(
    "bad_line,code,param",
    [
        ("this is not json", "invalid_json_line", None),
        (request_line("req-0", {"model": MODEL, "input": "again"}), "duplicate_custom_id", "custom_id"),
        (request_line("x", {"model": MODEL, "input": "x"}, url="/v1/chat/completions"), "invalid_url", "url"),
        (request_line("x", {"model": MODEL, "input": "x"}, method="GET"), "invalid_method", "method"),
        (request_line("x", {"model": "no-such-model", "input": "x"}), "model_not_found", "body.model"),
        (
            json.dumps({"method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "x"}}),
            "missing_required_parameter",
            "custom_id",
        ),
    ],
)
def test_invalid_input_file_fails_validation_naming_the_line(client, bad_line, code, param) -> None:  # noqa: ANN001
    lines = [*embedding_lines(["one", "two"]), bad_line]
    done = wait_finished(client, submit(client, lines).id)
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    assert [(e.code, e.line, e.param) for e in done.errors.data] == [(code, 3, param)]
    assert done.errors.data[0].message


def test_more_than_50000_requests_fail_validation(client) -> None:  # noqa: ANN001
    lines = [request_line(str(n), {"model": MODEL, "input": "x"}) for n in range(50_001)]
    done = wait_finished(client, submit(client, lines).id)
    assert done.status == "failed" and done.request_counts.total == 50_001
    assert ("too_many_requests", None) in [(e.code, e.line) for e in done.errors.data]


def test_more_than_50000_inputs_fail_validation(client) -> None:  # noqa: ANN001
    lines = [request_line(str(n), {"model": MODEL, "input": ["x"] * 2048}) for n in range(25)]
    done = wait_finished(client, submit(client, lines).id)
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [("too_many_inputs", None)]


def test_an_empty_file_fails_validation(client) -> None:  # noqa: ANN001
    done = wait_finished(client, submit(client, ["", "  "]).id)
    assert done.status == "failed" and done.errors.data[0].code == "empty_file"


def test_batches_list_newest_first_with_cursor_paging(client) -> None:  # noqa: ANN001
    created = [submit(client, embedding_lines(["page"])).id for _ in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == [created[2], created[1]] and first.has_more
    second = client.batches.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == created[0]
    iterated = [
        b.id for b in itertools.islice(client.batches.list(limit=2), 3)
    ]  # follows `after` across pages
    assert iterated == created[::-1]
    for batch_id in created:
        wait_finished(client, batch_id)


def test_cancel_stops_a_running_batch_and_accounts_for_every_request(served, client, long_inputs) -> None:  # noqa: ANN001
    with served.holding():  # its first chunks wait in the engine: the batch is surely mid-run when cancelled
        batch = submit(client, embedding_lines(long_inputs, truncate=True))
        wait_until(client, batch.id, lambda b: b.status == "in_progress")
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
    done = wait_finished(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    executed = result_lines(client, done.output_file_id)
    skipped = result_lines(client, done.error_file_id)
    assert all(line["error"]["code"] == "batch_cancelled" and line["response"] is None for line in skipped)
    ids = [line["custom_id"] for line in executed + skipped]
    assert sorted(ids) == sorted(f"req-{n}" for n in range(len(long_inputs)))
    assert done.request_counts.completed == len(executed) < len(long_inputs)


def test_a_finished_batch_cannot_be_cancelled(client) -> None:  # noqa: ANN001
    done = wait_finished(client, submit(client, embedding_lines(["quick"])).id)
    with pytest.raises(openai.ConflictError) as caught:
        client.batches.cancel(done.id)
    assert caught.value.code == "batch_not_cancellable"


def test_a_batch_past_its_completion_window_expires_keeping_finished_results(
    served, client, long_inputs
) -> None:  # noqa: ANN001
    inputs = long_inputs
    with served.holding():  # no chunk finishes before the window is over
        batch = submit(client, embedding_lines(inputs, truncate=True), completion_window="4s")
        wait_until(client, batch.id, lambda b: b.status == "in_progress")
        assert wait_for(lambda: time.time() > batch.expires_at, timeout=10)
    done = wait_finished(client, batch.id)
    assert done.status == "expired" and done.expired_at
    expired = [line for line in result_lines(client, done.error_file_id) if line["error"]]
    assert expired and all(line["error"]["code"] == "batch_expired" for line in expired)
    finished = result_lines(client, done.output_file_id)
    assert len(finished) + len(expired) == len(inputs) and len(finished) == done.request_counts.completed


def test_the_input_of_an_unfinished_batch_cannot_be_deleted(served, client, long_inputs) -> None:  # noqa: ANN001
    with served.holding():
        batch = submit(client, embedding_lines(long_inputs, truncate=True))
        try:
            with pytest.raises(openai.ConflictError) as caught:
                client.files.delete(batch.input_file_id)
            assert caught.value.code == "file_in_use"
        finally:
            client.batches.cancel(batch.id)
    wait_finished(client, batch.id)
    assert client.files.delete(batch.input_file_id).deleted


def test_files_upload_list_retrieve_download_and_delete(client) -> None:  # noqa: ANN001
    data = (request_line("one", {"model": MODEL, "input": "x"}) + "\n").encode()
    created = client.files.create(file=("mine.jsonl", io.BytesIO(data)), purpose="batch")
    assert (created.object, created.purpose, created.filename, created.bytes) == (
        "file",
        "batch",
        "mine.jsonl",
        len(data),
    )
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).content == data
    assert created.id in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.list(limit=1).data[0].id == created.id  # newest first
    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_files_expire_after_the_requested_time(client) -> None:  # noqa: ANN001
    created = client.files.create(
        file=("short.jsonl", io.BytesIO(b"{}\n")),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600


@pytest.mark.parametrize(
    "call,param",
    [
        (
            lambda c, f: c.batches.create(
                input_file_id=f, endpoint="/v1/chat/completions", completion_window="24h"
            ),
            "endpoint",
        ),
        (
            lambda c, f: c.batches.create(
                input_file_id=f, endpoint="/v1/embeddings", completion_window="soon"
            ),
            "completion_window",
        ),
        (
            lambda c, f: c.batches.create(
                input_file_id=f, endpoint="/v1/embeddings", completion_window="24h\n"
            ),
            "completion_window",
        ),
        (
            lambda c, f: c.batches.create(
                input_file_id=f,
                endpoint="/v1/embeddings",
                completion_window="24h",
                metadata={f"k{n}": "v" for n in range(17)},
            ),
            "metadata",
        ),
        (lambda c, f: c.files.create(file=("x.jsonl", io.BytesIO(b"{}")), purpose="fine-tune"), "purpose"),
    ],
)
def test_bad_create_requests_are_400_naming_the_parameter(client, call, param) -> None:  # noqa: ANN001
    file_id = upload(client, embedding_lines(["x"]))
    with pytest.raises(openai.BadRequestError) as caught:
        call(client, file_id)
    assert caught.value.body["param"] == param


def test_unknown_batches_and_files_are_404(client) -> None:  # noqa: ANN001
    for call in (
        lambda: client.batches.retrieve("batch_nope"),
        lambda: client.batches.cancel("batch_nope"),
        lambda: client.files.retrieve("file-nope"),
        lambda: client.files.content("file-nope"),
        lambda: client.batches.create(
            input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body["type"] == "invalid_request_error"


def test_a_line_over_the_body_limit_fails_validation_without_being_held_in_memory(served, client) -> None:  # noqa: ANN001
    line = 40 * MIB  # the server's body limit is 16 MiB
    huge = request_line("huge", {"model": MODEL, "input": "a" * line})
    lines = [
        request_line("before", {"model": MODEL, "input": "x"}),
        huge,
        request_line("after", {"model": MODEL, "input": "y"}),
    ]
    file_id = upload(client, lines)
    before = reset_peak_memory(served.process.pid)
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
    done = wait_finished(client, batch.id)
    grew = peak_memory(served.process.pid) - before
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [("request_too_large", 2)]
    assert grew < line / 4, f"validation grew the server's memory by {grew / MIB:.1f} MiB"


def _multipart(*parts: tuple[str, bytes], boundary: str = "kwtest") -> bytes:
    body = b"".join(f"--{boundary}\r\n{head}\r\n\r\n".encode() + data + b"\r\n" for head, data in parts)
    return body + f"--{boundary}--\r\n".encode()


_PURPOSE = ('Content-Disposition: form-data; name="purpose"', b"batch")
_FILE = ('Content-Disposition: form-data; name="file"; filename="in.jsonl"', b"{}\n")


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("multipart/form-data", b"no boundary in the content type"),
        ("multipart/form-data; boundary=kwtest", b"\x00\xff not multipart at all"),
        (
            "multipart/form-data; boundary=kwtest",
            b"--kwtest\r\nno colon in this header\r\n\r\nx\r\n--kwtest--\r\n",
        ),
        (
            "multipart/form-data; boundary=kwtest",
            _multipart(*[(f'Content-Disposition: form-data; name="f{n}"', b"x") for n in range(20)]),
        ),
        (
            "multipart/form-data; boundary=kwtest",
            _multipart(_PURPOSE, ('Content-Disposition: form-data; name="file"', b"{}")),
        ),
        (
            "multipart/form-data; boundary=kwtest",
            _multipart(('Content-Disposition: form-data; name="purpose"; filename="p"', b"batch"), _FILE),
        ),
        (
            "multipart/form-data; boundary=kwtest",
            _multipart(
                _PURPOSE,
                ('Content-Disposition: form-data; name="expires_after[seconds]"', "²".encode()),
                _FILE,
            ),
        ),
    ],
    ids=[
        "no-boundary",
        "garbage",
        "bad-part-header",
        "too-many-fields",
        "file-as-text",
        "purpose-as-file",
        "superscript-seconds",
    ],
)
def test_malformed_uploads_are_400_in_the_error_envelope(served, content_type, body) -> None:  # noqa: ANN001
    answer = httpx.post(f"{served.v1}/files", content=body, headers={"content-type": content_type})
    assert answer.status_code == 400, answer.text
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert answer.json()["error"]["type"] == "invalid_request_error"


def _stored_files(served: RunningServer) -> list[str]:
    return sorted(path.name for path in (served.data_dir / "batches" / "files").iterdir())


def test_a_client_hanging_up_mid_upload_is_logged_499_and_stores_nothing(served, client) -> None:  # noqa: ANN001
    stored = _stored_files(served)
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=kwtest\r\n"
        f"Content-Length: {10 * MIB}\r\nX-Request-ID: hangs-up-mid-upload\r\n\r\n"
    ).encode()
    start = _multipart(_PURPOSE)[: -len(b"--kwtest--\r\n")]
    start += b'--kwtest\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(head + start + b"{}\n" * 100_000)
    logged = re.compile(r'"request_id":"hangs-up-mid-upload".*"status":(\d+)')
    assert wait_for(lambda: logged.search(served.logs()), timeout=30)
    assert logged.search(served.logs())[1] == "499"
    assert _stored_files(served) == stored
    assert "Traceback" not in served.logs()


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except openai.APIStatusError as error:
        return f"{error.status_code} {error.body.get('code') if isinstance(error.body, dict) else ''}"
    return "ok"


def test_deleting_a_file_and_creating_a_batch_from_it_never_both_succeed(served, client) -> None:  # noqa: ANN001
    outcomes, created = [], []
    with served.holding(), ThreadPoolExecutor(2) as pool:  # held: a batch created here stays unfinished
        for _ in range(20):
            file_id = upload(client, embedding_lines(["race"]))
            create = pool.submit(
                _outcome,
                lambda f=file_id: created.append(
                    client.batches.create(
                        input_file_id=f, endpoint="/v1/embeddings", completion_window="24h"
                    ).id
                ),
            )
            delete = pool.submit(_outcome, lambda f=file_id: client.files.delete(f))
            outcomes.append((create.result(), delete.result()))
        for batch_id in created:
            client.batches.cancel(batch_id)
    for batch_id in created:
        wait_finished(client, batch_id)
    assert set(outcomes) <= {("ok", "409 file_in_use"), ("404 None", "ok")}, outcomes


def test_an_internal_error_reaches_the_caller_as_a_generic_message_with_an_error_id(served, client) -> None:  # noqa: ANN001
    with served.holding():  # the runner is busy with the first batch while the second one's input vanishes
        first = submit(client, embedding_lines(["first"]))
        wait_until(client, first.id, lambda b: b.status == "in_progress")
        second = submit(client, embedding_lines(["second"]))
        (served.data_dir / "batches" / "files" / second.input_file_id).unlink()  # as a failing disk would
    done = wait_finished(client, second.id)
    wait_finished(client, first.id)
    [error] = done.errors.data
    assert done.status == "failed" and error.code == "server_error"
    error_id = re.fullmatch(
        r"The batch stopped on an internal error \(error id ([0-9a-f]{32}) in the server log\)\.",
        error.message,
    )
    assert error_id, error.message
    assert error_id[1] in served.logs() and str(served.data_dir) not in error.message
