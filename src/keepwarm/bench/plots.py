"""Draw the sweeps (`sweeps.run_sweeps`) as PNG files: one figure per thing that varies.

Each throughput figure has two panels side by side, tokens/s and p95 request latency,
against the same x axis; every figure's caption names the model, the CPU, its cores and
the load average during the run, because the figures mean nothing without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from keepwarm.bench.report import cpu_description  # noqa: E402

Series = dict[str, list[dict[str, Any]]]  # legend label -> points


def write_plots(sweeps: dict[str, Any], directory: Path) -> list[Path]:
    """Write every figure the sweeps have data for into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    caption = _caption(sweeps)
    server = "keepwarm server"
    figures = [
        ("clients.png", "concurrent clients", "clients", {server: sweeps.get("clients")}),
        ("text_length.png", "tokens per text", "text_tokens", {server: sweeps.get("lengths")}),
        (
            "batch_tokens.png",
            "token budget per model call (--max-batch-tokens)",
            "max_batch_tokens",
            {server: sweeps.get("batch_tokens")},
        ),
    ]
    if long := sweeps.get("long_context"):
        series = {
            "full window (8K)": long["full"],
            f"chunked into {long['chunk_window']}-token windows": long["chunked"],
        }
        figures.append(("long_context.png", "tokens per text (8K ModernBERT-shaped)", "text_tokens", series))
    written = [
        _throughput_figure(directory / name, xlabel, key, series, caption)
        for name, xlabel, key, series in figures
        if all(series.values())
    ]
    if cost := sweeps.get("cost"):
        written.append(
            _cost_figure(directory / "cost.png", cost, sweeps["settings"]["price_per_hour"], caption)
        )
    return written


def _caption(sweeps: dict[str, Any]) -> str:
    machine = sweeps["machine"]
    load = (sweeps.get("conditions") or {}).get("load_average_at_start")
    where = f"{cpu_description(machine, 'no AVX2')}, {machine['cores']} cores"
    return f"{sweeps['model']} on {where}; load average at start {load[0] if load else 'unknown'}"


def _throughput_figure(path: Path, xlabel: str, key: str, series: Series, caption: str) -> Path:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, points in series.items():
        xs = [point[key] for point in points]
        left.plot(xs, [point["tokens_per_s"] for point in points], marker="o", label=label)
        right.plot(xs, [point["p95_ms"] for point in points], marker="o", label=label)
    for axes, ylabel in ((left, "throughput (tokens/s)"), (right, "p95 request latency (ms)")):
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_xscale("log", base=2)
        axes.grid(True, alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.legend()
    figure.suptitle(f"throughput and p95 against {xlabel}", fontsize=12)
    _finish(figure, caption, path)
    return path


def _cost_figure(path: Path, cost: dict[str, Any], price_per_hour: float, caption: str) -> Path:
    figure, axes = plt.subplots(figsize=(8, 4.6))
    points = cost["points"]
    axes.plot(
        [100 * point["utilisation"] for point in points],
        [point["usd_per_million_tokens"] for point in points],
        marker="o",
        label=f"keepwarm at ${price_per_hour}/hour, peak {cost['peak_tokens_per_s']:,.0f} tokens/s",
    )
    for (offer, price), style in zip(cost["openai"].items(), ("--", ":"), strict=False):
        axes.axhline(price, linestyle=style, color="grey", label=f"{offer}: ${price}/M tokens")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("utilisation (% of the measured peak throughput)")
    axes.set_ylabel("USD per million tokens")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.suptitle("cost per million tokens against utilisation", fontsize=12)
    _finish(figure, caption, path)
    return path


def _finish(figure: plt.Figure, caption: str, path: Path) -> None:
    figure.text(0.5, 0.01, caption, ha="center", fontsize=8, color="dimgrey")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
