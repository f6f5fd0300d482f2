"""Where `reembed` gets vectors: the engine in this process, or a running keepwarm server.

Against a server, work goes through the Batch API with the official `openai` client,
so a re-index runs at background priority and never slows the server's live traffic;
every batch reports the exact model version that embedded it, which is checked
against the pinned version before its vectors are kept.
"""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

import numpy as np
import orjson

from keepwarm.engine import BACKGROUND, Embeddings, EmbedOptions, Engine
from keepwarm.errors import ConfigError, KeepwarmError

_REQUEST_TEXTS = 128  # texts per embeddings request (one engine job, or one batch line)
_POLL_SECONDS = 0.1


class Embedder(Protocol):
    """Embeds texts with one exact model version."""

    model: str
    version: str
    dimensions: int

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Vectors in input order, and the tokens they cost."""
        ...


def _requests(texts: list[str]) -> list[list[str]]:
    return [texts[start : start + _REQUEST_TEXTS] for start in range(0, len(texts), _REQUEST_TEXTS)]


class LocalEmbedder:
    """The engine in this process, at background priority."""

    def __init__(self, engine: Engine, model: str, *, truncate: bool) -> None:
        self.engine = engine
        self.model = model  # a name, alias or pin (`name@version`), resolved by the engine
        self.options = EmbedOptions(truncate=truncate, priority=BACKGROUND)
        served = engine.embed_sync(model, ["version probe"], self.options).model  # loads a lazy model too
        self.version = served.version
        self.dimensions = served.dimensions
        self.options = replace(self.options, expect_version=self.version)  # a reload must not mix versions
        self._pool = ThreadPoolExecutor(4, "keepwarm-reembed")  # several requests queued: full model calls

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        results = list(self._pool.map(self._embed_one, _requests(texts)))
        return np.concatenate([r.vectors for r in results]), sum(r.tokens for r in results)

    def _embed_one(self, texts: list[str]) -> Embeddings:
        return self.engine.embed_sync(self.model, texts, self.options)


class RemoteEmbedder:
    """A keepwarm server, through its Batch API."""

    def __init__(self, url: str, model: str, *, truncate: bool, api_key: str | None) -> None:
        import openai

        self.client = openai.OpenAI(base_url=url, api_key=api_key or "unused", max_retries=5)
        self.model = model
        self.truncate = truncate
        self.version = (self.client.models.retrieve(model).model_extra or {}).get("full_version") or ""
        if not self.version:
            raise ConfigError(f"{url} does not report the version of '{model}' (is it a keepwarm server?)")
        probe = self.client.embeddings.create(model=model, input="version probe")  # loads a lazy model too
        self.dimensions = len(probe.data[0].embedding)

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        lines = b"".join(
            orjson.dumps(
                {
                    "custom_id": str(n),
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {
                        "model": self.model,
                        "input": chunk,
                        "encoding_format": "base64",
                        "truncate": self.truncate,
                    },
                }
            )
            + b"\n"
            for n, chunk in enumerate(_requests(texts))
        )
        upload = self.client.files.create(file=("reembed.jsonl", io.BytesIO(lines)), purpose="batch")
        try:
            batch = self._run(upload.id)
            return self._vectors(batch, len(texts))
        finally:
            self.client.files.delete(upload.id)

    def _run(self, file_id: str):  # noqa: ANN202 - openai Batch
        batch = self.client.batches.create(
            input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(_POLL_SECONDS)
            batch = self.client.batches.retrieve(batch.id)
        if batch.status != "completed":
            errors = batch.errors.data if batch.errors and batch.errors.data else []
            detail = errors[0].message if errors else ""
            raise KeepwarmError(f"batch {batch.id} ended {batch.status}. {detail}")
        used = (batch.model_extra or {}).get("model_version")
        if used != self.version:
            raise ConfigError(f"the server embedded with version {str(used)[:12]}, not {self.version[:12]}")
        return batch

    def _vectors(self, batch, count: int) -> tuple[np.ndarray, int]:  # noqa: ANN001
        if batch.error_file_id:
            first = orjson.loads(self.client.files.content(batch.error_file_id).content.splitlines()[0])
            self.client.files.delete(batch.error_file_id)
            raise KeepwarmError(
                f"request failed in batch {batch.id}: {first['response']['body']['error']['message']}"
            )
        lines = [
            orjson.loads(line)
            for line in self.client.files.content(batch.output_file_id).content.splitlines()
        ]
        self.client.files.delete(batch.output_file_id)
        lines.sort(key=lambda line: int(line["custom_id"]))
        rows = [
            np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            for line in lines
            for item in line["response"]["body"]["data"]
        ]
        assert len(rows) == count, f"batch {batch.id} returned {len(rows)} vectors for {count} texts"
        tokens = sum(line["response"]["body"]["usage"]["total_tokens"] for line in lines)
        return np.stack(rows), tokens
