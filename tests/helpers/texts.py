"""Real texts for the tests: the project's own benchmark corpus, built from the standard library."""

from __future__ import annotations

import functools
from pathlib import Path

import orjson

from keepwarm.datasets import bench_corpus


@functools.cache
def corpus_texts() -> tuple[str, ...]:
    """The corpus `keepwarm bench` uses by default, in its fixed order."""
    return tuple(bench_corpus())


def write_corpus(path: Path, texts: tuple[str, ...] | list[str] | None = None) -> Path:
    """`texts` (default: the whole corpus) as JSONL with an `id` and a `text` per line."""
    texts = corpus_texts() if texts is None else texts
    path.write_bytes(
        b"".join(orjson.dumps({"id": f"t-{n:05d}", "text": t}) + b"\n" for n, t in enumerate(texts))
    )
    return path
