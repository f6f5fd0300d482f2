"""What docs/batches.md promises a batch: one version throughout, and a standby server that takes over.

Model calls are held (the servers' test hook) while the test changes the world around a
running batch, so nothing depends on how fast the model is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from helpers import RunningServer, assert_same_vectors, cosines, start_server, wait_for
from helpers.batching import embedding_lines, result_lines, submit, wait_finished, wait_until
from helpers.models import tiny_bert

TEXTS = [f"document {n} about the batch guarantees" for n in range(12)]


@pytest.fixture(scope="module")
def versions(tmp_path_factory, model_dir) -> dict[str, Path]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("batch-versions")
    return {
        "old": tiny_bert(root / "old", model_dir, seed=21),
        "new": tiny_bert(root / "new", model_dir, seed=22),
    }


def _catalog(path: Path, versions: dict[str, Path], current: str) -> Path:
    path.write_text(
        "".join(
            f'[[models]]\nname = "m"\nsource = "{source}"\nruntime = "onnx"\n'
            f"current = {str(name == current).lower()}\n\n"
            for name, source in versions.items()
        )
    )
    return path


@pytest.fixture
def servers() -> Iterator[list[RunningServer]]:
    """Servers a test starts; all stopped at the end whatever happens."""
    started: list[RunningServer] = []
    yield started
    for running in started:
        running.stop()


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def _vectors(lines: list[dict]) -> np.ndarray:
    return np.array([line["response"]["body"]["data"][0]["embedding"] for line in lines])


def _online(server: RunningServer, model: str) -> np.ndarray:
    response = httpx.post(f"{server.v1}/embeddings", json={"model": model, "input": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    return np.array([item["embedding"] for item in response.json()["data"]])


def test_a_batch_keeps_its_version_across_a_catalog_reload(tmp_path, log_dir, versions, servers) -> None:  # noqa: ANN001
    config = _catalog(tmp_path / "models.toml", versions, current="old")
    server = start_server(tmp_path / "data", log_dir, "--config", str(config), holdable=True)
    servers.append(server)
    client = _client(server)
    old = httpx.get(f"{server.v1}/models/m").json()["full_version"]
    with server.holding():
        batch = submit(client, embedding_lines(TEXTS, model="m"))
        wait_until(client, batch.id, lambda b: b.status == "in_progress")  # validated: its version is chosen
        _catalog(config, versions, current="new")
        assert httpx.post(f"{server.url}/admin/reload", timeout=120).status_code == 200
        assert httpx.get(f"{server.v1}/models/m").json()["full_version"] != old
    done = wait_finished(client, batch.id)
    assert done.status == "completed" and done.model_extra["model_version"] == old
    lines = result_lines(client, done.output_file_id)
    assert {line["response"]["body"]["model_version"] for line in lines} == {old[:12]}
    assert_same_vectors(_vectors(lines), _online(server, f"m@{old[:12]}"))
    assert cosines(_vectors(lines), _online(server, "m")).max() < 0.99  # the new current version differs


def test_a_standby_server_takes_over_the_batch_of_one_that_stops(
    tmp_path, log_dir, versions, servers
) -> None:  # noqa: ANN001
    config = str(_catalog(tmp_path / "models.toml", versions, current="old"))
    runner = start_server(tmp_path / "data", log_dir, "--config", config, holdable=True)
    servers.append(runner)
    assert wait_for(lambda: "batch runner started" in runner.logs())
    standby = start_server(tmp_path / "data", log_dir, "--config", config)
    servers.append(standby)
    assert wait_for(lambda: "standing by" in standby.logs())
    client = _client(standby)
    with runner.holding():
        batch = submit(client, embedding_lines(TEXTS, model="m"))
        wait_until(
            client, batch.id, lambda b: b.status == "in_progress"
        )  # the runner took it; its work is held
        assert runner.stop() == 0
    done = wait_finished(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == len(TEXTS)
    ids = [line["custom_id"] for line in result_lines(client, done.output_file_id)]
    assert sorted(ids) == sorted(f"req-{n}" for n in range(len(TEXTS)))
    assert "batch runner started" in standby.logs()
