"""The benchmark's findings as one JSON-ready dict: figures, ratios, accuracy, targets, cost.

Absolute figures depend on the machine and on whatever else it runs; the ratios are
measured within one run on the same cores and are what the targets are stated in.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.bench.runner import BenchOptions, Measured
from keepwarm.bench.stats import best, best_latency, percentile_ms
from keepwarm.cost import cost_report

# CPU features that decide which runtimes and precisions are fast.
_CPU_FEATURES = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
)


def machine(cores: int) -> dict[str, Any]:
    """The CPU the figures were measured on: model, generation and the relevant instruction sets.

    A cloud guest often names only the brand ("AMD EPYC"); the family and model numbers
    still tell one generation from the next, which can run the same code at half the speed.
    """
    info = {
        "cores": cores,
        "cpu": platform.processor() or platform.machine(),
        "cpu_id": None,
        "cpu_features": [],
        "gpu": None,
    }
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in lines if ":" in line)  # the last CPU's entry; all are alike
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    info["cpu"] = fields.get("model name", info["cpu"])
    if "cpu family" in fields and "model" in fields:
        vendor = fields.get("vendor_id", "")
        info["cpu_id"] = f"{vendor} family {fields['cpu family']} model {fields['model']}".strip()
    info["cpu_features"] = [flag for flag in _CPU_FEATURES if flag in fields.get("flags", "").split()]
    return info


def cpu_description(machine: dict[str, Any], no_features: str) -> str:
    """One line naming the CPU, its generation where known, and its relevant instruction sets."""
    name = ", ".join(filter(None, (machine["cpu"], machine.get("cpu_id"))))  # older reports lack cpu_id
    return f"{name} ({', '.join(machine['cpu_features']) or no_features})"


def cosine_summary(actual: np.ndarray, expected: np.ndarray) -> dict[str, float] | None:
    """Mean and minimum row-wise cosine over the rows both sides have."""
    a, b = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    answered = ~np.isnan(a).any(axis=1) & ~np.isnan(b).any(axis=1)
    if not answered.any():
        return None
    a, b = a[answered], b[answered]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "mean": round(float(cos.mean()), 6),
        "min": round(float(cos.min()), 6),
        "rows": int(answered.sum()),
    }


def build_report(
    measured: Measured, options: BenchOptions, corpus: str, price_per_hour: float | None = None
) -> dict[str, Any]:
    """Everything the run found, with each figure taken from the best of its repeats."""
    cores = measured.server["cores"]
    phases = {name: _phase(measured, name, cores) for name in measured.runs}
    ratios = _ratios(measured, phases)
    report = {
        "keepwarm": version("keepwarm"),
        "model": options.spec.name,
        "server_runtime": measured.server.get("runtime"),
        "machine": machine(cores),
        "corpus": {"source": corpus, "texts": len(options.texts)},
        "settings": {
            "clients": options.clients,
            "texts_per_request": options.texts_per_request,
            "burst_requests": options.burst,
            "burst_gap_s": options.burst_gap,
            "idle_text": options.idle_text,
            "idle_requests": options.idle_requests,
            "texts_per_call": options.texts_per_call,
            "repeat": options.repeat,
            "server_args": list(options.server_args),
        },
        "server": {key: value for key, value in measured.server.items() if key not in ("runtime", "cores")},
        "conditions": measured.conditions,
        "phases": phases,
        "ratios": ratios,
        "accuracy": _accuracy(measured),
        "targets": _targets(measured, ratios),
    }
    if price_per_hour is not None:
        steady = measured.runs.get("closed") or measured.runs.get("bursts")
        if steady:
            report["cost"] = cost_report(price_per_hour, best(steady).tokens_per_second)
    return report


def _phase(measured: Measured, name: str, cores: int) -> dict[str, Any]:
    runs = measured.runs[name]
    chosen = best_latency(runs) if name in ("idle", "single_call") else best(runs)
    index = runs.index(chosen)
    figures = {"label": measured.labels.get(name, name), **chosen.summary()}
    share_of = "client" if name in ("closed", "bursts", "idle") else "inprocess"
    figures[f"{share_of}_cpu_share"] = chosen.cpu_share(chosen.cpu_seconds, cores)
    if share_of == "client" and chosen.cpu_seconds is not None:
        figures["client_cpu_us_per_request"] = round(chosen.cpu_seconds / len(chosen.latencies) * 1e6, 1)
    server_cpu = measured.server_cpu[name][index]
    figures["server_cpu_share"] = chosen.cpu_share(server_cpu, cores)
    work_cpu = server_cpu if share_of == "client" else chosen.cpu_seconds
    if work_cpu and name not in ("idle", "single_call"):
        figures["texts_per_cpu_s"] = round(chosen.texts / work_cpu, 2)
    if len(runs) > 1:
        figures["runs"] = [run.summary() for run in runs]
    return figures


def _throughput(measured: Measured, name: str) -> float | None:
    runs = measured.runs.get(name)
    return best(runs).texts_per_second if runs else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 4) if numerator and denominator else None


def _phase_figure(phases: dict[str, dict[str, Any]], name: str, key: str) -> float | None:
    return phases.get(name, {}).get(key)


def _ratios(measured: Measured, phases: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    closed, bursts = _throughput(measured, "closed"), _throughput(measured, "bursts")
    served, engine = _throughput(measured, "inprocess"), _throughput(measured, "engine")
    onnx = _throughput(measured, "onnx_fp32") or served  # the served runtime is ORT fp32 when absent
    ratios = {
        "closed_vs_inprocess": _ratio(closed, served),
        "closed_vs_onnx_fp32": _ratio(closed, onnx),
        "closed_vs_engine": _ratio(closed, engine),  # what HTTP costs
        "engine_vs_inprocess": _ratio(engine, served),  # what forming calls from a queue costs
        "closed_vs_inprocess_per_cpu_second": _ratio(
            _phase_figure(phases, "closed", "texts_per_cpu_s"),
            _phase_figure(phases, "inprocess", "texts_per_cpu_s"),
        ),
        "bursts_vs_closed": _ratio(bursts, closed),
        "bursts_vs_inprocess": _ratio(bursts, served),
        "inprocess_vs_onnx_fp32": _ratio(served, onnx),
        "sentence_transformers_vs_onnx_fp32": _ratio(_throughput(measured, "sentence_transformers"), onnx),
    }
    idle, single = measured.runs.get("idle"), measured.runs.get("single_call")
    if idle and single:
        chosen, in_process = best_latency(idle), best_latency(single).percentile_ms(50)
        ratios["idle_p50_minus_single_call_ms"] = round(chosen.percentile_ms(50) - in_process, 3)
        if chosen.server:  # what the server's own handling and model call add, HTTP left out
            server = percentile_ms(chosen.server, 50)
            ratios["idle_server_p50_minus_single_call_ms"] = round(server - in_process, 3)
    return {key: value for key, value in ratios.items() if value is not None}


def _accuracy(measured: Measured) -> dict[str, Any]:
    vectors = measured.vectors
    reference = vectors.get("onnx_fp32", vectors.get("inprocess"))
    pairs = {
        "server_vs_onnx_fp32": ("server", reference),
        "inprocess_vs_onnx_fp32": ("inprocess", reference if "onnx_fp32" in vectors else None),
        "server_vs_sentence_transformers": ("server", vectors.get("sentence_transformers")),
    }
    found = {}
    for name, (side, expected) in pairs.items():
        if side in vectors and expected is not None and (summary := cosine_summary(vectors[side], expected)):
            found[name] = summary
    return found


def _targets(measured: Measured, ratios: dict[str, float]) -> list[dict[str, Any]]:
    """Issue 7's targets, each judged from this run's figures (absent when not measured)."""
    server = measured.server
    checks = [
        ("throughput ≥ 0.95 × in-process, same runtime", ratios.get("closed_vs_inprocess"), 0.95, "min"),
        ("throughput ≥ 2 × in-process ONNX Runtime fp32", ratios.get("closed_vs_onnx_fp32"), 2.0, "min"),
        ("bursts ≥ 0.9 × steady closed loop", ratios.get("bursts_vs_closed"), 0.9, "min"),
        (
            "one short text at idle: p50 ≤ in-process + 2 ms",
            ratios.get("idle_p50_minus_single_call_ms"),
            2.0,
            "max",
        ),
        ("ready in ≤ 3 s with the artifact cached", server.get("ready_seconds"), 3.0, "max"),
        # after the load phases: runtimes' memory grows with the model-call shapes they have run
        ("resident memory after the load phases ≤ 400 MB", server.get("rss_mb"), 400.0, "max"),
        (
            "resident memory 3 s idle after the load phases ≤ 400 MB",
            server.get("rss_mb_once_idle"),
            400.0,
            "max",
        ),
    ]
    return [
        {
            "target": name,
            "measured": value,
            "limit": limit,
            "met": value >= limit if kind == "min" else value <= limit,
        }
        for name, value, limit, kind in checks
        if value is not None
    ]
