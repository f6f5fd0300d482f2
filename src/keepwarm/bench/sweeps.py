"""How cost grows with the work: closed-loop throughput and p95 as one setting varies.

Each sweep holds everything fixed but one thing: concurrent clients, text length, the
token budget per model call (`--max-batch-tokens`, one fresh server per value), and for
a long-context model a full 8K window against the same text chunked. Every point is a
closed loop of the bench's own load generator (`client.run_phase`) against a real
`keepwarm serve` started through `ServerProcess`, with the embedding cache off, so every
text is computed. The result is one JSON-ready dict; `plots.py` draws it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from keepwarm.bench import client
from keepwarm.bench.client import LoadClient
from keepwarm.bench.long_model import LONG_CONTEXT_TOKENS, modernbert_8k
from keepwarm.bench.process import ServerProcess
from keepwarm.bench.report import machine
from keepwarm.bench.runner import SERVER_DEFAULTS, Tracker, load_average
from keepwarm.bench.stats import Measurement
from keepwarm.catalog import ModelSpec
from keepwarm.cost import OPENAI_PRICES, Pricing
from keepwarm.machine import available_cores

_LONG_FULL, _LONG_CHUNKED = "modernbert-8k-full", "modernbert-8k-chunked"
_CHUNK_WINDOW = 512
_NO_QUEUE_DEADLINE = ("--queue-timeout", "0")
UTILISATIONS = tuple(u / 100 for u in (1, 2, 5, 10, 20, 30, 50, 70, 100))


@dataclass(frozen=True)
class SweepOptions:
    """The points of each sweep and how much work each point measures."""

    clients: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    lengths: tuple[int, ...] = (16, 32, 64, 128, 256)  # capped at the model's maximum
    batch_tokens: tuple[int, ...] = (512, 2048, 8192, 32768)
    long_lengths: tuple[int, ...] = (512, 2048, 8192)  # () skips the long-context sweep
    texts: int = 512  # texts per point (at least two requests per client)
    long_texts: int = 8
    fixed_clients: int = 16  # clients in the sweeps that vary something else
    texts_per_request: int = 8
    price_per_hour: float = 0.09
    max_seconds: float = 120.0  # per point


def run_sweeps(
    spec: ModelSpec,
    corpus: list[str],
    data_dir: Path,
    server_args: tuple[str, ...],
    options: SweepOptions,
    track: Tracker,
) -> dict[str, Any]:
    """Every sweep in turn; the servers it starts get `server_args` (e.g. --config) first."""
    started = load_average()
    result: dict[str, Any] = {
        "model": spec.name,
        "machine": machine(available_cores()),
        "settings": {
            "texts_per_point": options.texts,
            "texts_per_request": options.texts_per_request,
            "fixed_clients": options.fixed_clients,
            "server_args": list(server_args),
            "price_per_hour": options.price_per_hour,
        },
    }
    texts = client_texts(corpus, options.texts)
    with _serving(data_dir, server_args) as url:
        result["clients"] = [
            _point(
                {"clients": n},
                _closed(
                    url,
                    spec.name,
                    _cycled(texts, max(len(texts), 2 * n * options.texts_per_request)),
                    n,
                    options,
                    track,
                ),
            )
            for n in options.clients
        ]
        result["lengths"] = _length_sweep(url, spec, corpus, options, track)
    result["batch_tokens"] = [
        _point(
            {"max_batch_tokens": budget},
            _budget_point(data_dir, server_args, spec, texts, budget, options, track),
        )
        for budget in options.batch_tokens
    ]
    if options.long_lengths:
        result["long_context"] = _long_context(data_dir, spec, corpus, options, track)
    result["cost"] = cost_curve(options.price_per_hour, max(p["tokens_per_s"] for p in result["clients"]))
    result["conditions"] = {"load_average_at_start": started, "load_average_at_end": load_average()}
    return result


def cost_curve(price_per_hour: float, tokens_per_second: float) -> dict[str, Any]:
    """$ per million tokens at each utilisation of the peak throughput, beside OpenAI's prices."""
    pricing = Pricing(per_hour=price_per_hour)
    return {
        "peak_tokens_per_s": tokens_per_second,
        "points": [
            {
                "utilisation": u,
                "usd_per_million_tokens": pricing.cost(1_000_000, 1e6 / (tokens_per_second * u)),
            }
            for u in UTILISATIONS
        ],
        "openai": dict(OPENAI_PRICES),
    }


def client_texts(corpus: list[str], count: int) -> list[str]:
    """The first `count` texts of the (already shuffled) corpus."""
    return _cycled(corpus, count)


def texts_of_length(tokenizer: Tokenizer, corpus: list[str], tokens: int, count: int) -> list[str]:
    """`count` consecutive pieces of the corpus, each `tokens` tokens long with the special tokens."""
    content = tokens - tokenizer.num_special_tokens_to_add(is_pair=False)
    ids: list[int] = []
    for text in corpus:
        ids.extend(tokenizer.encode(text, add_special_tokens=False).ids)
        if len(ids) >= content * count:
            break
    while len(ids) < content * count:  # a small corpus: reuse it
        ids.extend(ids)
    pieces = (ids[i * content : (i + 1) * content] for i in range(count))
    return [tokenizer.decode(piece, skip_special_tokens=False) for piece in pieces]  # [UNK] stays one token


def _cycled(texts: list[str], count: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(max(count, 1))]


def _point(setting: dict[str, Any], measured: Measurement) -> dict[str, Any]:
    figures = measured.summary()
    figures["tokens_per_text"] = round(measured.tokens / measured.texts, 1) if measured.texts else None
    return {**setting, **{key: figures[key] for key in _POINT_KEYS}}


_POINT_KEYS = ("texts", "tokens", "tokens_per_text", "texts_per_s", "tokens_per_s", "p50_ms", "p95_ms")


def _closed(
    url: str,
    model: str,
    texts: list[str],
    clients: int,
    options: SweepOptions,
    track: Tracker,
    *,
    per_request: int | None = None,
    truncate: bool | None = True,
) -> Measurement:
    """One warmed-up closed loop of `clients` clients over `texts`."""
    requests = client.prepare(model, texts, per_request or options.texts_per_request, truncate=truncate)

    async def body(load: LoadClient) -> Measurement:
        await load.warm_up(requests[:clients])
        return await load.closed_loop(requests, clients, advance, time.perf_counter() + options.max_seconds)

    with track(f"{model}, {clients} clients", len(texts)) as advance:
        measured, _ = client.run_phase(url, clients, None, body)
    return measured


def _length_sweep(
    url: str, spec: ModelSpec, corpus: list[str], options: SweepOptions, track: Tracker
) -> list[dict[str, Any]]:
    tokenizer = Tokenizer.from_file(str(spec.directory / "tokenizer.json"))
    lengths = sorted({min(length, spec.max_tokens) for length in options.lengths})
    return [
        _point(
            {"text_tokens": length},
            _closed(
                url,
                spec.name,
                texts_of_length(tokenizer, corpus, length, options.texts),
                options.fixed_clients,
                options,
                track,
            ),
        )
        for length in lengths
    ]


def _budget_point(
    data_dir: Path,
    server_args: tuple[str, ...],
    spec: ModelSpec,
    texts: list[str],
    budget: int,
    options: SweepOptions,
    track: Tracker,
) -> Measurement:
    with _serving(data_dir, (*server_args, f"--max-batch-tokens={budget}")) as url:
        return _closed(url, spec.name, texts, options.fixed_clients, options, track)


def _long_context(
    data_dir: Path, spec: ModelSpec, corpus: list[str], options: SweepOptions, track: Tracker
) -> dict[str, Any]:
    """The same long texts embedded as one full window, and chunked into 512-token windows."""
    directory = modernbert_8k(data_dir / "bench-models" / "modernbert-8k", spec.directory)
    config = data_dir / "bench-models" / "modernbert-8k.toml"
    entries = {
        _LONG_FULL: 'overflow = "truncate"',
        _LONG_CHUNKED: f'overflow = "chunk"\nmax_tokens = {_CHUNK_WINDOW}',
    }
    config.write_text(
        "".join(
            f'[[models]]\nname = "{name}"\nsource = "{directory}"\nruntime = "onnx"\n{settings}\n\n'
            for name, settings in entries.items()
        )
    )
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    found: dict[str, Any] = {
        "model": "ModernBERT-shaped, 3 layers, hidden 64, random weights",
        "chunk_window": _CHUNK_WINDOW,
    }
    with _serving(data_dir, ("--config", str(config))) as url:
        for name, key in ((_LONG_FULL, "full"), (_LONG_CHUNKED, "chunked")):
            found[key] = []
            for length in sorted({min(n, LONG_CONTEXT_TOKENS) for n in options.long_lengths}):
                texts = texts_of_length(tokenizer, corpus, length, options.long_texts)
                measured = _closed(url, name, texts, 2, options, track, per_request=1, truncate=None)
                found[key].append(_point({"text_tokens": length}, measured))
    return found


@contextmanager
def _serving(data_dir: Path, args: tuple[str, ...]) -> Iterator[str]:
    """A server with its cache off and no queue deadline: a saturated point is measured, not dropped."""
    with ServerProcess(data_dir, (*SERVER_DEFAULTS, *_NO_QUEUE_DEADLINE, *args)) as process:
        yield process.url
