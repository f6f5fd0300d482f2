"""Helpers for batch tests: input files in OpenAI's JSONL format, clients, polling, reading results."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import openai

from helpers import MODEL, RunningServer
from helpers.texts import corpus_texts

FINISHED = ("completed", "failed", "cancelled", "expired")


def long_texts(count: int) -> list[str]:
    """`count` distinct long corpus texts (over 256 tokens each): enough work to catch a batch mid-run."""
    return [text for text in corpus_texts() if len(text) > 1500][:count]


def client_for(server: RunningServer, secret: str = "unused") -> openai.OpenAI:
    """The official client on `server` for the holder of `secret`; no retries: tests see every answer."""
    return openai.OpenAI(base_url=server.v1, api_key=secret, max_retries=0)


def request_line(
    custom_id: str, body: dict[str, Any], *, url: str = "/v1/embeddings", method: str = "POST"
) -> str:
    return json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body})


def embedding_lines(texts: list[str], **options: Any) -> list[str]:
    """One request per text, custom_id `req-<n>`."""
    return [
        request_line(f"req-{n}", {"model": MODEL, "input": text, **options}) for n, text in enumerate(texts)
    ]


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


def reset_peak_memory(pid: int) -> int:
    """Start measuring the process's peak memory afresh; its resident memory now, in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    return _status_bytes(pid, "VmRSS")


def peak_memory(pid: int) -> int:
    """The process's peak resident memory since `reset_peak_memory`, in bytes."""
    return _status_bytes(pid, "VmHWM")


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")
