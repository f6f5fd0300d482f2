"""Helpers for batch tests: input files in OpenAI's JSONL format, polling, reading results."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import CORPUS, MODEL
from tiny_models import tiny_bert

FINISHED = ("completed", "failed", "cancelled", "expired")


def long_texts(count: int) -> list[str]:
    """`count` distinct long corpus texts (over 256 tokens each): enough work to catch a batch mid-run."""
    texts = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]
    return [text for text in texts if len(text) > 1500][:count]


def request_line(custom_id: str, body: dict[str, Any], *, url: str = "/v1/embeddings", method: str = "POST") -> str:
    return json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body})


def embedding_lines(texts: list[str], **options: Any) -> list[str]:
    """One request per text, custom_id `req-<n>`."""
    return [request_line(f"req-{n}", {"model": MODEL, "input": text, **options}) for n, text in enumerate(texts)]


def upload(client: openai.OpenAI, lines: list[str], name: str = "input.jsonl") -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=(name, io.BytesIO(data)), purpose="batch").id


def submit(client: openai.OpenAI, lines: list[str], **options: Any) -> Any:
    """Upload `lines` and create a batch over them."""
    options.setdefault("completion_window", "24h")
    return client.batches.create(input_file_id=upload(client, lines), endpoint="/v1/embeddings", **options)


def wait_until(client: openai.OpenAI, batch_id: str, done, timeout: float = 120.0) -> Any:  # noqa: ANN001
    """Poll (tightly) until `done(batch)` holds; returns that batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout}s: {batch}")


def wait_finished(client: openai.OpenAI, batch_id: str, timeout: float = 120.0) -> Any:
    return wait_until(client, batch_id, lambda b: b.status in FINISHED, timeout)


def result_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, model_dir) -> Path:  # noqa: ANN001
    """A tiny random model: a second model (or a changed version) that exports in seconds.

    Same seed everywhere, so every test shares one exported artifact.
    """
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny", model_dir, seed=5)


def isolated_data_dir(shared: Path, path: Path) -> Path:
    """A data directory of its own (so no other test's server runs its batches), sharing built models."""
    (path / "artifacts").mkdir(parents=True)
    for built in (shared / "artifacts").iterdir():  # linked one by one: new builds stay in `path`
        (path / "artifacts" / built.name).symlink_to(built)
    return path


@pytest.fixture
def own_data_dir(server, data_dir, tmp_path) -> Path:  # noqa: ANN001
    return isolated_data_dir(data_dir, tmp_path / "data")
