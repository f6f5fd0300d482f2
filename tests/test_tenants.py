"""API keys as tenants of the Batch and Files APIs: isolation, model permissions, limits and metering.

One server with several real keys, driven by the official client, as tenants would use it.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from helpers import MODEL, RunningServer, create_key, keepwarm, start_server, state_dir, wait_for
from helpers.batching import (
    client_for,
    embedding_lines,
    request_line,
    result_lines,
    submit,
    upload,
    wait_finished,
)

from keepwarm.api.limits import RateLimiter
from keepwarm.errors import RateLimited
from keepwarm.store import ApiKey

MIB = 1024 * 1024
KEYS = {
    "admin": ("--admin",),
    "alice": (),
    "bob": (),
    "narrow": ("--models", "some-other-model"),
    "slow": ("--tpm", "1200"),  # 20 tokens/s; batches leave 25 % (300 tokens) to its online calls
    "chatty": ("--rpm", "3"),
    "hoarder": (),
    "busy": (),
    "leaver": (),
}


@dataclass
class Tenants:
    server: RunningServer
    secrets: dict[str, str]

    def client(self, name: str) -> openai.OpenAI:
        return client_for(self.server, self.secrets[name])


@pytest.fixture(scope="module")
def tenants(server, data_dir, log_dir, tmp_path_factory) -> Iterator[Tenants]:  # noqa: ANN001
    """A holdable server that requires keys, with small per-key quotas: 1 MiB of files, 2 open batches."""
    state = state_dir(data_dir, tmp_path_factory.mktemp("tenants") / "data")
    secrets = {name: create_key(state, name, *options) for name, options in KEYS.items()}
    running = start_server(state, log_dir, "--max-stored-mb", "1", "--max-open-batches", "2", holdable=True)
    yield Tenants(running, secrets)
    running.stop()


@dataclass(frozen=True)
class Objects:
    input_file: str
    output_file: str
    batch: str


@pytest.fixture(scope="module")
def alices(tenants) -> Objects:  # noqa: ANN001
    """A finished batch of alice's, with its input and output files."""
    client = tenants.client("alice")
    done = wait_finished(client, submit(client, embedding_lines(["alice's secret text", "another"])).id)
    assert done.status == "completed"
    return Objects(done.input_file_id, done.output_file_id, done.id)


NOBODYS = Objects("file-" + "0" * 24, "file-" + "1" * 24, "batch_" + "0" * 32)
ROUTES: dict[str, Callable[[openai.OpenAI, Objects], Any]] = {
    "retrieve-input-file": lambda c, o: c.files.retrieve(o.input_file),
    "retrieve-output-file": lambda c, o: c.files.retrieve(o.output_file),
    "download-input-file": lambda c, o: c.files.content(o.input_file),
    "download-output-file": lambda c, o: c.files.content(o.output_file),
    "delete-input-file": lambda c, o: c.files.delete(o.input_file),
    "delete-output-file": lambda c, o: c.files.delete(o.output_file),
    "create-batch-from-file": lambda c, o: c.batches.create(
        input_file_id=o.input_file, endpoint="/v1/embeddings", completion_window="24h"
    ),
    "retrieve-batch": lambda c, o: c.batches.retrieve(o.batch),
    "cancel-batch": lambda c, o: c.batches.cancel(o.batch),
    "list-files-after-it": lambda c, o: c.files.list(after=o.input_file),
    "list-batches-after-it": lambda c, o: c.batches.list(after=o.batch),
}


def _not_found(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(openai.NotFoundError) as caught:
        call()
    return caught.value.body


@pytest.mark.parametrize("route", ROUTES, ids=list(ROUTES))
def test_another_keys_object_is_404_like_one_that_does_not_exist(tenants, alices, route) -> None:  # noqa: ANN001
    bob = tenants.client("bob")
    seen = _not_found(lambda: ROUTES[route](bob, alices))
    absent = _not_found(lambda: ROUTES[route](bob, NOBODYS))
    for mine, nobodys in zip(
        (alices.input_file, alices.output_file, alices.batch),
        (NOBODYS.input_file, NOBODYS.output_file, NOBODYS.batch),
        strict=True,
    ):
        absent["message"] = absent["message"].replace(nobodys, mine)
    assert seen == absent


def test_lists_show_a_key_only_its_own_files_and_batches(tenants, alices) -> None:  # noqa: ANN001
    bob, alice = tenants.client("bob"), tenants.client("alice")
    bobs_file = upload(bob, embedding_lines(["bob's text"]))
    assert [f.id for f in bob.files.list()] == [bobs_file]
    assert [b.id for b in bob.batches.list()] == []
    assert {f.id for f in alice.files.list()} == {
        alices.input_file,
        alices.output_file,
    }  # bob deleted nothing
    assert [b.id for b in alice.batches.list()] == [alices.batch]


def test_an_admin_key_sees_and_manages_every_keys_objects(tenants, alices) -> None:  # noqa: ANN001
    admin = tenants.client("admin")
    assert {alices.input_file, alices.output_file} <= {f.id for f in admin.files.list()}
    assert alices.batch in [b.id for b in admin.batches.list()]
    assert admin.batches.retrieve(alices.batch).status == "completed"
    assert "embedding" in admin.files.content(alices.output_file).text
    with pytest.raises(openai.ConflictError):  # it sees the batch: only its status forbids this
        admin.batches.cancel(alices.batch)


def test_a_batch_line_with_a_model_the_key_may_not_use_fails_with_the_online_403_message(tenants) -> None:  # noqa: ANN001
    online = httpx.post(
        f"{tenants.server.v1}/embeddings",
        json={"model": MODEL, "input": "x"},
        headers={"Authorization": f"Bearer {tenants.secrets['narrow']}"},
    )
    assert online.status_code == 403
    client = tenants.client("narrow")
    done = wait_finished(client, submit(client, embedding_lines(["x"])).id)
    assert done.status == "failed"
    [error] = done.errors.data
    assert (error.code, error.line, error.param) == ("model_not_allowed", 1, "body.model")
    assert error.message == online.json()["error"]["message"]


def test_a_batch_line_with_an_unknown_model_names_only_the_models_the_key_may_use(tenants) -> None:  # noqa: ANN001
    client = tenants.client("narrow")
    line = request_line("req-0", {"model": "no-such-model", "input": "x"})
    done = wait_finished(client, submit(client, [line]).id)
    assert done.status == "failed"
    [error] = done.errors.data
    assert error.code == "model_not_found"
    assert MODEL not in error.message  # served, but not to this key
    assert "Available models: none." in error.message


@dataclass(frozen=True)
class SlowRun:
    batch: Any
    online: httpx.Response


ONLINE_QUERY = "word " * 98  # 100 tokens: a third of the 300 the batch leaves, more than a greedy one would


@pytest.fixture(scope="module")
def slow_run(tenants) -> SlowRun:  # noqa: ANN001
    """A batch of more tokens than the key 'slow' may spend at once, and an online call while it waits.

    While model work is held, the batch's lines are admitted (their tokens taken) but not
    run: the 18th of its 20 lines of 51 tokens finds the budget short (1,200 minus the
    300 reserved), whatever the machine's speed.
    """
    client = tenants.client("slow")
    lines = [request_line(f"line-{n}", {"model": MODEL, "input": f"{n} " + "word " * 48}) for n in range(20)]
    answers: list[httpx.Response] = []
    with tenants.server.holding():
        batch = submit(client, lines)
        assert wait_for(lambda: "for the token budget of key slow" in tenants.server.logs(), timeout=60)
        call = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{tenants.server.v1}/embeddings",
                    json={"model": MODEL, "input": ONLINE_QUERY},
                    headers={"Authorization": f"Bearer {tenants.secrets['slow']}"},
                    timeout=120,
                )
            )
        )
        call.start()
    call.join()
    return SlowRun(wait_finished(client, batch.id, timeout=180), answers[0])


def test_a_batch_waits_for_its_keys_tpm_and_never_fails_for_it(slow_run) -> None:  # noqa: ANN001
    done = slow_run.batch
    assert done.usage.total_tokens > 1200 - 300  # more than the key could spend on it without waiting
    assert done.status == "completed" and (done.request_counts.completed, done.request_counts.failed) == (
        20,
        0,
    )


def test_a_waiting_batch_leaves_the_keys_online_calls_their_reserve(slow_run) -> None:  # noqa: ANN001
    assert slow_run.online.status_code == 200, slow_run.online.text
    assert slow_run.online.json()["usage"]["total_tokens"] == 100


def test_batch_tokens_are_metered_to_the_owner_key(tenants, slow_run) -> None:  # noqa: ANN001
    report = json.loads(
        keepwarm("usage", "--json", "--key", "slow", "--data-dir", str(tenants.server.data_dir)).stdout
    )
    online_tokens = slow_run.online.json()["usage"]["total_tokens"]
    assert report["total"]["tokens"] == slow_run.batch.usage.total_tokens + online_tokens
    assert report["total"]["requests"] == 20 + 1


def test_files_and_batches_routes_count_against_the_keys_rpm(tenants) -> None:  # noqa: ANN001
    client = tenants.client("chatty")
    client.files.list()
    client.batches.list()
    client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    with pytest.raises(openai.RateLimitError) as caught:
        client.batches.list()
    assert caught.value.code == "rate_limit_exceeded" and caught.value.body["type"] == "requests"


def test_a_key_over_its_stored_bytes_gets_429_storage_quota_exceeded(tenants) -> None:  # noqa: ANN001
    hoarder = tenants.client("hoarder")
    data = b"x" * (700 * 1024)
    first = hoarder.files.create(file=("a.jsonl", io.BytesIO(data)), purpose="batch")
    with pytest.raises(openai.RateLimitError) as caught:
        hoarder.files.create(file=("b.jsonl", io.BytesIO(data)), purpose="batch")
    assert caught.value.code == "storage_quota_exceeded" and "hoarder" in caught.value.message
    assert [f.id for f in hoarder.files.list()] == [first.id]  # the refused upload left nothing
    assert (
        tenants.client("bob").files.create(file=("c.jsonl", io.BytesIO(data)), purpose="batch").id
    )  # per key
    hoarder.files.delete(first.id)
    assert hoarder.files.create(file=("b.jsonl", io.BytesIO(data)), purpose="batch").id


def test_a_key_with_too_many_open_batches_gets_429_too_many_open_batches(tenants) -> None:  # noqa: ANN001
    busy = tenants.client("busy")
    with tenants.server.holding():  # held: the first two stay unfinished
        opened = [submit(busy, embedding_lines([f"open {n}"])).id for n in range(2)]
        with pytest.raises(openai.RateLimitError) as caught:
            submit(busy, embedding_lines(["one too many"]))
        assert caught.value.code == "too_many_open_batches"
        for batch_id in opened:
            busy.batches.cancel(batch_id)
    for batch_id in opened:
        wait_finished(busy, batch_id)
    assert wait_finished(busy, submit(busy, embedding_lines(["room again"])).id).status == "completed"


def test_a_revoked_keys_batch_stops_as_failed_keeping_what_it_finished(tenants) -> None:  # noqa: ANN001
    leaver, admin = tenants.client("leaver"), tenants.client("admin")
    lines = embedding_lines([f"short {n}" for n in range(200)])  # over two chunks of 64: some never start
    with tenants.server.holding():
        batch = submit(leaver, lines)
        assert wait_for(lambda: admin.batches.retrieve(batch.id).status == "in_progress")
        keepwarm("keys", "revoke", "leaver", "--data-dir", str(tenants.server.data_dir))
    done = wait_finished(admin, batch.id)
    assert done.status == "failed" and [e.code for e in done.errors.data] == ["key_revoked"]
    finished = result_lines(admin, done.output_file_id)
    never_ran = result_lines(admin, done.error_file_id)
    assert {line["error"]["code"] for line in never_ran} == {"batch_failed"}
    assert len(finished) == done.request_counts.completed and len(finished) + len(never_ran) == len(lines)


def test_background_tokens_never_take_the_reserve_kept_for_online_calls() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    key = ApiKey(id=7, name="k", prefix="kw-k", tpm=600)  # 10 tokens/s; a reserve of 25 % is 150 tokens
    assert limiter.take_background(key, 400, 0.25) == 0  # 600 → 200
    assert limiter.take_background(key, 100, 0.25) == pytest.approx(5.0)  # 200 - 100 < 150: 5 s until 250
    limiter.check_tokens(key, 150)  # online calls may spend the reserve: 200 → 50
    now[0] = 20.0  # refilled to 250
    assert limiter.take_background(key, 100, 0.25) == 0  # 250 → 150, exactly the reserve
    assert limiter.take_background(key, 500, 0.25) == pytest.approx(45.0)  # over 600 - 150: a full bucket
    with pytest.raises(RateLimited, match="Request too large"):
        limiter.take_background(key, 601, 0.25)  # over the whole limit: as online, waiting cannot help
