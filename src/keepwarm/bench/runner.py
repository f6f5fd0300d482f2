"""One benchmark run: start (or reach) the server, then measure every phase in turn.

Phases alternate between the server and the in-process baselines and are repeated
`repeat` times, so that a neighbour's load on a shared machine hits both sides alike;
each figure is the best of its repeats, because noise only ever slows a run down.
The server and the baselines never run at the same time.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from keepwarm.bench import client, inprocess
from keepwarm.bench.client import LoadClient
from keepwarm.bench.inprocess import Baseline
from keepwarm.bench.process import ServerProcess
from keepwarm.bench.stats import Measurement
from keepwarm.catalog import ModelSpec
from keepwarm.engine import Engine
from keepwarm.machine import available_cores
from keepwarm.runtimes.openvino import RELEASE_AFTER_IDLE_SECONDS

# A phase's progress: a context manager given (label, total texts) yielding an advance(n) callable.
Tracker = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
MODES = ("closed", "bursts", "idle")
# The server measures compute: its embedding cache would answer repeated texts for free
# (a --server-arg=--cache-mb=N given by the user comes later and wins).
SERVER_DEFAULTS = ("--cache-mb", "0")

_SETTLE_SECONDS = 1.0  # the release's own time, and the kernel's RSS accounting


@dataclass(frozen=True)
class BenchOptions:
    """What to measure and how hard to push."""

    spec: ModelSpec
    texts: list[str]
    data_dir: Path
    url: str | None = None  # an existing server; None starts one
    api_key: str | None = None
    server_args: tuple[str, ...] = ()
    modes: tuple[str, ...] = MODES
    clients: int = 16
    texts_per_request: int = 8
    burst: int = 64
    burst_gap: float = 1.0
    idle_text: str = "What is the capital of France?"
    idle_requests: int = 50
    idle_gap: float = 0.02
    texts_per_call: int = 32  # in-process baselines: texts per model call
    repeat: int = 1
    max_seconds: float = 300.0
    outputs: tuple[str, ...] = ("dense",)  # what each request asks for (dense first, then sparse/multivector)
    sentence_transformers: bool = False


@dataclass
class Measured:
    """Raw measurements of a run, by phase, before they are turned into a report."""

    server: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, list[Measurement]] = field(default_factory=dict)
    server_cpu: dict[str, list[float | None]] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)

    def record(self, phase: str, result: Measurement, server_cpu: float | None = None) -> None:
        self.runs.setdefault(phase, []).append(result)
        self.server_cpu.setdefault(phase, []).append(server_cpu)


def run_benchmark(options: BenchOptions, track: Tracker) -> Measured:
    """Measure every requested phase; the result feeds `report.build_report`."""
    measured = Measured()
    measured.conditions["load_average_at_start"] = load_average()
    measured.conditions["outputs"] = list(options.outputs)
    with _server(options, measured) as (url, process):
        engine, served = inprocess.load_served(options.spec, options.data_dir)
        try:
            reported = _served_model(url, options.spec.name, options.api_key)
            runtime = (str(reported[key]) for key in ("runtime", "dtype") if reported.get(key))
            measured.server["runtime"] = " ".join(runtime)
            measured.server["call_limits"] = inprocess.use_served_limits(served, reported)
            measured.labels["inprocess"] = f"in-process {served.runtime.name} {served.opened.dtype}"
            baselines = {
                "inprocess": Baseline(
                    measured.labels["inprocess"], served.runtime, served.tokenizer, frozenset(options.outputs)
                )
            }
            reference = inprocess.onnx_reference(served, options.data_dir)
            if reference is not served.runtime:
                measured.labels["onnx_fp32"] = "in-process onnx fp32 (reference)"
                baselines["onnx_fp32"] = Baseline(
                    measured.labels["onnx_fp32"], reference, served.tokenizer, frozenset(options.outputs)
                )
            if {"closed", "bursts"} & set(options.modes):
                for _ in range(options.repeat):
                    _throughput_round(options, baselines, engine, url, process, measured, track)
            if "idle" in options.modes:
                for _ in range(options.repeat):
                    _idle_round(options, baselines["inprocess"], url, process, measured, track)
            if options.sentence_transformers:
                with track("sentence-transformers in-process", len(options.texts)) as advance:
                    result, measured.vectors["sentence_transformers"] = inprocess.sentence_transformers(
                        options.spec, served.tokenizer, options.texts, options.texts_per_call, advance
                    )
                measured.record("sentence_transformers", result)
        finally:
            engine.close()
        if process:
            measured.server.update(process.memory_mb() or {})
            # what a server keeps once traffic stops: its runtime hands the largest calls'
            # buffers back after RELEASE_AFTER_IDLE_SECONDS without one (runtimes/openvino.py)
            time.sleep(RELEASE_AFTER_IDLE_SECONDS + _SETTLE_SECONDS)
            later = process.memory_mb() or {}
            measured.server.update(rss_mb_once_idle=later.get("rss_mb"), peak_rss_mb=later.get("peak_rss_mb"))
    measured.conditions["load_average_at_end"] = load_average()
    return measured


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: how busy the (possibly shared) machine was."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


@contextlib.contextmanager
def _server(options: BenchOptions, measured: Measured) -> Iterator[tuple[str, ServerProcess | None]]:
    """The server to drive: the given URL, or a fresh `keepwarm serve` (started again if it exported)."""
    measured.server["cores"] = available_cores()
    if options.url:
        measured.server["url"] = options.url
        yield options.url.rstrip("/"), None
        return
    args = (*SERVER_DEFAULTS, *options.server_args)
    process = ServerProcess(options.data_dir, args)
    try:
        process.start()
        if process.exported:  # the first start built the artifact: time a start that finds it cached
            process.stop()
            process = ServerProcess(options.data_dir, args)
            process.start()
        measured.server["ready_seconds"] = round(process.ready_seconds, 3)
        measured.server.update(
            {f"{key}_after_ready": value for key, value in (process.memory_mb() or {}).items()}
        )
        measured.server["args"] = list(options.server_args)
        yield process.url, process
    finally:
        process.stop()


def _served_model(url: str, model: str, api_key: str | None) -> dict[str, Any]:
    """What the server reports for the model: its runtime and dtype, its call limits."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"{url}/v1/models/{model}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())


def _throughput_round(
    options: BenchOptions,
    baselines: dict[str, Baseline],
    engine: Engine,
    url: str,
    process: ServerProcess | None,
    measured: Measured,
    track: Tracker,
) -> None:
    for name, baseline in baselines.items():
        with track(baseline.label, len(options.texts)) as advance:
            result, measured.vectors[name] = inprocess.throughput(
                baseline, options.texts, options.texts_per_call, advance
            )
        measured.record(name, result)
    requests = client.prepare(options.spec.name, options.texts, options.texts_per_request, options.outputs)
    if "closed" in options.modes:
        _engine_phase(options, engine, requests, measured, track)
        label = f"server, {options.clients} clients × {options.texts_per_request} texts"
        _server_phase(
            measured,
            "closed",
            label,
            options,
            url,
            process,
            track,
            options.clients,
            lambda c, advance, deadline: c.closed_loop(requests, options.clients, advance, deadline),
        )
    if "bursts" in options.modes:
        label = f"server, bursts of {options.burst} × {options.texts_per_request} texts"
        _server_phase(
            measured,
            "bursts",
            label,
            options,
            url,
            process,
            track,
            options.burst,
            lambda c, advance, deadline: c.bursts(
                requests, options.burst, options.burst_gap, advance, deadline
            ),
        )


def _engine_phase(
    options: BenchOptions,
    engine: Engine,
    requests: list[client.Request],
    measured: Measured,
    track: Tracker,
) -> None:
    """The closed loop's requests on the engine in this process: what the server does, less HTTP."""
    per_request = options.texts_per_request
    measured.labels["engine"] = f"engine in-process, {options.clients} callers × {per_request} texts, no HTTP"
    texts = [options.texts[r.first : r.first + r.count] for r in requests]
    with track(measured.labels["engine"], len(options.texts)) as advance:
        result = inprocess.engine_closed_loop(
            engine, options.spec.name, texts, options.clients, options.outputs, advance
        )
    measured.record("engine", result)


def _idle_round(
    options: BenchOptions,
    baseline: Baseline,
    url: str,
    process: ServerProcess | None,
    measured: Measured,
    track: Tracker,
) -> None:
    count, gap = options.idle_requests, options.idle_gap
    measured.labels["single_call"] = f"{baseline.label}, one short text"
    with track(measured.labels["single_call"], count) as advance:
        measured.record(
            "single_call", inprocess.single_calls(baseline, options.idle_text, count, gap, advance)
        )
    request = client.prepare(options.spec.name, [options.idle_text], 1, options.outputs)[0]
    _server_phase(
        measured,
        "idle",
        "server, one short text at idle",
        options,
        url,
        process,
        track,
        1,
        lambda c, advance, _deadline: c.idle(request, count, gap, advance),
        total=count,
    )


def _server_phase(
    measured: Measured,
    phase: str,
    label: str,
    options: BenchOptions,
    url: str,
    process: ServerProcess | None,
    track: Tracker,
    connections: int,
    load: Callable[[LoadClient, Callable[[int], None], float], Awaitable[Measurement]],
    total: int | None = None,
) -> None:
    """Warm a fresh client up, then measure `load`, with the server's CPU time over the same span."""
    server_cpu: list[float | None] = []

    async def body(load_client: LoadClient) -> Measurement:
        await load_client.warm_up(
            client.prepare(
                options.spec.name,
                options.texts[: connections * options.texts_per_request],
                options.texts_per_request,
                options.outputs,
            )
        )
        server_cpu.append(process.cpu_seconds() if process else None)
        result = await load(load_client, advance, time.perf_counter() + options.max_seconds)
        server_cpu.append(process.cpu_seconds() if process else None)
        return result

    measured.labels[phase] = label
    with track(label, total or len(options.texts)) as advance:
        result, vectors = client.run_phase(url, connections, options.api_key, body)
    before, after = server_cpu
    measured.record(phase, result, after - before if before is not None and after is not None else None)
    if phase == "closed" and vectors:
        measured.vectors["server"] = _in_text_order(vectors, len(options.texts))


def _in_text_order(vectors: dict[int, np.ndarray], count: int) -> np.ndarray:
    """Stack the vectors the server returned, by corpus position (rows never answered are NaN)."""
    dims = next(iter(vectors.values())).shape[1]
    ordered = np.full((count, dims), np.nan, dtype=np.float32)
    for first, block in vectors.items():
        ordered[first : first + len(block)] = block
    return ordered
