"""Benchmark: does a running batch job hurt online latency, and does it use the spare capacity?

Against a real server on loopback, three phases of equal length:
1. online only: single-text queries at a fixed rate (open loop), latency measured;
2. job only: a large batch job alone, its throughput measured from the batch's own usage;
3. both at once: the same online load while the job runs.
The report gives online p50/p90/p99 in phases 1 and 3 (their ratio is the target: ≤ 2×),
the job's tokens/s alone and under load, and the share of capacity the online load
used, so the job's throughput under load can be compared with what was left to it.
"""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from keepwarm.bench.stats import latency_summary


@dataclass(frozen=True)
class Plan:
    url: str  # the server's /v1 base URL
    model: str
    queries: list[str]
    documents: list[str]
    rate: float  # online requests per second
    seconds: float  # length of each phase


def online_load(plan: Plan) -> tuple[dict[str, float | None], int]:
    """Send queries at `plan.rate` for `plan.seconds` (open loop); latencies and tokens used."""
    latencies: list[float] = []
    tokens = 0
    lock = threading.Lock()

    def one(client: httpx.Client, text: str) -> None:
        nonlocal tokens
        started = time.perf_counter()
        response = client.post(f"{plan.url}/embeddings", json={"model": plan.model, "input": text})
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        with lock:
            latencies.append(elapsed)
            tokens += response.json()["usage"]["total_tokens"]

    count = int(plan.rate * plan.seconds)
    with (
        httpx.Client(timeout=60, limits=httpx.Limits(max_connections=32)) as client,
        ThreadPoolExecutor(32) as pool,
    ):
        start = time.perf_counter()
        futures = []
        for n in range(count):
            delay = start + n / plan.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, client, plan.queries[n % len(plan.queries)]))
        for future in futures:
            future.result()
    return latency_summary(latencies, (50, 90, 99)), tokens


def _job_lines(plan: Plan) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"doc-{n}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": plan.model, "input": text, "truncate": True},
            }
        ).encode()
        + b"\n"
        for n, text in enumerate(plan.documents)
    )


class Job:
    """A batch job over the documents, whose progress is read from the batch's usage."""

    def __init__(self, client: openai.OpenAI, plan: Plan) -> None:
        self.client = client
        upload = client.files.create(file=("bench.jsonl", io.BytesIO(_job_lines(plan))), purpose="batch")
        self.batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        while self._refresh().status == "validating" or not self.batch.usage.total_tokens:
            time.sleep(0.05)  # measure from the first checkpoint on: workers started, pipeline full

    def _refresh(self) -> Any:
        self.batch = self.client.batches.retrieve(self.batch.id)
        return self.batch

    def tokens(self) -> tuple[float, int]:
        batch = self._refresh()
        if batch.status != "in_progress":
            raise RuntimeError(f"the benchmark job ran out of work ({batch.status}); give it more documents")
        return time.perf_counter(), batch.usage.total_tokens

    def cancel(self) -> None:
        self.client.batches.cancel(self.batch.id)


def _job_rate(job: Job, seconds: float, during=None) -> tuple[float, Any]:  # noqa: ANN001 - during: callable
    """The job's tokens/s over `seconds` (while `during()` runs, if given)."""
    start, before = job.tokens()
    if during is None:
        time.sleep(seconds)
        result = None
    else:
        result = during()
    end, after = job.tokens()
    return round((after - before) / (end - start), 1), result


def run(plan: Plan) -> dict[str, Any]:
    """All three phases; returns the report."""
    client = openai.OpenAI(base_url=plan.url, api_key="unused", max_retries=0)
    online_load(Plan(**{**plan.__dict__, "seconds": min(plan.seconds, 3.0)}))  # warm-up
    idle, online_tokens = online_load(plan)
    job = Job(client, plan)
    try:
        alone, _ = _job_rate(job, plan.seconds)
        shared, (loaded, _) = _job_rate(job, plan.seconds, during=lambda: online_load(plan))
    finally:
        job.cancel()
    online_share = online_tokens / plan.seconds / alone if alone else None
    return {
        "online_rate_per_s": plan.rate,
        "phase_seconds": plan.seconds,
        "online_idle": idle,
        "online_during_job": loaded,
        "p50_ratio": round(loaded["p50_ms"] / idle["p50_ms"], 2),
        "job_tokens_per_s_alone": alone,
        "job_tokens_per_s_during_online": shared,
        "online_share_of_capacity": round(online_share, 3) if online_share is not None else None,
        "job_share_of_capacity_left": round(shared / (alone * (1 - online_share)), 3)
        if online_share
        else None,
    }
