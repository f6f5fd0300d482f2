"""The texts a benchmark sends: a JSONL file with one `{"text": ...}` object per line.

Without a file, the built-in corpus is used: code, docstrings and documentation prose
from this Python's standard library (keepwarm.datasets), the same texts on every machine
with the same Python version. A sample is drawn with a fixed seed so that every phase of
one run, and every run with the same options, embeds exactly the same texts.
"""

from __future__ import annotations

import platform
import random
from pathlib import Path

import orjson

from keepwarm.datasets import bench_corpus


class CorpusError(ValueError):
    """The corpus file is missing or is not JSONL with a non-empty `text` on every line."""


def corpus_texts(path: Path | None) -> tuple[list[str], str]:
    """The texts of the JSONL file at `path`, or of the built-in corpus; and what they are, for the report."""
    if path is not None:
        return load_corpus(path), str(path)
    texts = bench_corpus()
    return texts, f"built-in: {len(texts)} texts from the Python {platform.python_version()} standard library"


def load_corpus(path: Path) -> list[str]:
    """Every `text` in the file, in file order; CorpusError names the first bad line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc.strerror or exc}") from None
    return parse_corpus(data, str(path))


def parse_corpus(data: bytes, source: str) -> list[str]:
    """Every `text` in JSONL `data` (a file or an uploaded sample); errors name `source` and the line."""
    texts = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = orjson.loads(line).get("text")
        except (orjson.JSONDecodeError, AttributeError):
            raise CorpusError(f"{source}:{number}: not a JSON object") from None
        if not isinstance(text, str) or not text:
            raise CorpusError(f"{source}:{number}: needs a non-empty string field 'text'")
        texts.append(text)
    if not texts:
        raise CorpusError(f"{source}: no texts")
    return texts


def sample(texts: list[str], count: int | None, seed: int) -> list[str]:
    """`count` texts in a seeded random order (all of them when count is None or larger).

    Shuffling matters: a file grouped by source would hand the server runs of similar
    lengths, which real traffic does not.
    """
    chosen = list(texts)
    random.Random(seed).shuffle(chosen)
    return chosen[:count] if count else chosen
