"""Rerank throughput: pairs per second through a server against the same reranker in-process.

`keepwarm bench` runs this when the measured model is a reranker. The in-process baseline
is the best the runtime can do: every (query, document) pair tokenized by the model's own
pair tokenizer, sorted by length and run in model calls of `per_call` pairs, straight on
`runtime.embed`. The server phase is a closed loop of concurrent clients, each request one
query with `per_request` documents. With an embedding model in the same catalog, a third
phase measures what a large rerank does to embedding traffic: the latency of one-text
embedding requests alone, then while 1,000-document reranks keep the reranker busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from keepwarm.bench.inprocess import load_served
from keepwarm.bench.process import ServerProcess
from keepwarm.bench.stats import Measurement
from keepwarm.catalog import ModelSpec
from keepwarm.engine.model import ServedModel
from keepwarm.engine.pairs import PairOptions
from keepwarm.engine.worker import model_inputs

LARGE_RERANK = 1_000  # documents in one request of the starvation phase


@dataclass(frozen=True)
class RerankLoad:
    """What the rerank benchmark sends."""

    model: str
    queries: list[str]
    documents: list[str]
    per_request: int
    per_call: int
    clients: int
    api_key: str | None = None
    embed_model: str | None = None  # an embedding model of the same server, for the starvation phase


def in_process(served: ServedModel, load: RerankLoad) -> Measurement:
    """Pairs per second on the served runtime itself, in length-sorted calls of `per_call` pairs."""
    assert served.pairs is not None
    result = Measurement()
    with result.timed():
        rows = []
        for start in range(0, len(load.documents), load.per_request):
            query = load.queries[(start // load.per_request) % len(load.queries)]
            documents = load.documents[start : start + load.per_request]
            tokenized = served.pairs.encode(query, documents, PairOptions(overflow="truncate"))
            types = tokenized.type_ids or [None] * len(tokenized.ids)
            rows.extend(zip(tokenized.ids, types, strict=True))
        rows.sort(key=lambda row: len(row[0]))
        for start in range(0, len(rows), load.per_call):
            ids = [row[0] for row in rows[start : start + load.per_call]]
            types = (
                None if rows[start][1] is None else [row[1] for row in rows[start : start + load.per_call]]
            )
            began = time.perf_counter()
            served.runtime.embed(*model_inputs(ids, types, served.tokenizer.pad_id))
            result.add(len(ids), sum(map(len, ids)), time.perf_counter() - began)
    return result


def _headers(load: RerankLoad) -> dict[str, str]:
    return {"Authorization": f"Bearer {load.api_key}"} if load.api_key else {}


def _rerank_bodies(load: RerankLoad) -> list[dict[str, Any]]:
    return [
        {
            "model": load.model,
            "query": load.queries[n % len(load.queries)],
            "documents": load.documents[start : start + load.per_request],
        }
        for n, start in enumerate(range(0, len(load.documents), load.per_request))
    ]


def through_server(url: str, load: RerankLoad) -> Measurement:
    """Pairs per second from `clients` concurrent clients, each sending its next rerank once one returns."""
    bodies = _rerank_bodies(load)
    pending = list(reversed(bodies))
    lock = threading.Lock()
    result = Measurement()

    def client() -> None:
        with httpx.Client(base_url=url, headers=_headers(load), timeout=600) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    body = pending.pop()
                started = time.perf_counter()
                answer = http.post("/v1/rerank", json=body)
                answer.raise_for_status()
                with lock:
                    tokens = answer.json()["usage"]["total_tokens"]
                    result.add(len(body["documents"]), tokens, time.perf_counter() - started)

    with httpx.Client(base_url=url, headers=_headers(load), timeout=600) as http:
        http.post("/v1/rerank", json=bodies[0]).raise_for_status()  # warm up
    with result.timed():
        _run_threads(client, load.clients)
    return result


def embedding_latency_under_rerank(url: str, load: RerankLoad, requests: int = 10) -> dict[str, Any]:
    """One-text embedding latency alone, then while 1,000-document reranks run without pause."""
    assert load.embed_model is not None
    documents = (load.documents * (LARGE_RERANK // max(1, len(load.documents)) + 1))[:LARGE_RERANK]
    large = {"model": load.model, "query": load.queries[0], "documents": documents}
    probe = {"model": load.embed_model, "input": "how do I reset my password"}
    stop = threading.Event()
    reranks = Measurement()

    def embed_latencies(http: httpx.Client) -> Measurement:
        measured = Measurement()
        for _ in range(requests):
            started = time.perf_counter()
            http.post("/v1/embeddings", json=probe).raise_for_status()
            measured.add(1, 0, time.perf_counter() - started)
            time.sleep(0.05)
        return measured

    def rerank_forever() -> None:
        with httpx.Client(base_url=url, headers=_headers(load), timeout=600) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.post("/v1/rerank", json=large).raise_for_status()
                reranks.add(LARGE_RERANK, 0, time.perf_counter() - started)

    with httpx.Client(base_url=url, headers=_headers(load), timeout=600) as http:
        alone = embed_latencies(http)
        worker = threading.Thread(target=rerank_forever, daemon=True)
        worker.start()
        time.sleep(0.5)  # the first large rerank is queued and running
        loaded = embed_latencies(http)
        stop.set()
        worker.join()
    return {
        "embedding_alone": alone.summary(),
        "embedding_during_large_reranks": loaded.summary(),
        "large_rerank": reranks.summary(),
    }


def _run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def rerank_report(served: ServedModel, url: str, load: RerankLoad, data_dir: Path) -> dict[str, Any]:
    """Every phase's figures, pairs per second as `texts_per_s`."""
    baseline = in_process(served, load)
    server = through_server(url, load)
    report: dict[str, Any] = {
        "model": load.model,
        "runtime": f"{served.runtime.name} {served.opened.dtype}",
        "documents": len(load.documents),
        "documents_per_request": load.per_request,
        "clients": load.clients,
        "in_process": baseline.summary(),
        "server": server.summary(),
        "server_vs_in_process": round(server.texts_per_second / baseline.texts_per_second, 3),
        "data_dir": str(data_dir),
    }
    if load.embed_model:
        report["starvation"] = embedding_latency_under_rerank(url, load)
    return report


def run_rerank_benchmark(
    spec: ModelSpec,
    *,
    data_dir: Path,
    url: str | None,
    server_args: tuple[str, ...],
    load: RerankLoad,
) -> dict[str, Any]:
    """Load the reranker in-process as the server does, start (or reach) the server, run every phase."""
    engine, served = load_served(spec, data_dir)
    try:
        if url:
            return rerank_report(served, url.rstrip("/"), load, data_dir)
        with ServerProcess(data_dir, ("--cache-mb", "0", *server_args)) as process:
            return rerank_report(served, process.url, load, data_dir)
    finally:
        engine.close()


def queries_from(texts: list[str], count: int = 16, words: int = 8) -> list[str]:
    """Short queries: the first words of some of the texts."""
    return [" ".join(text.split()[:words]) for text in texts[:count] if text.split()]
