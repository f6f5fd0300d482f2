"""What a person sees: a progress bar per phase while it runs, then tables of the results."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keepwarm.bench.report import cpu_description


class ProgressTracker:
    """A `Tracker` for the runner: one rich progress bar per phase, on stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @contextlib.contextmanager
    def __call__(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn("{task.description:<48}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(label, total=total)
            yield lambda done: progress.advance(task, done)


def _figure(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def report_console() -> Console:
    """Standard output, at least 120 columns wide even when redirected (for files and docs)."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def render(report: dict[str, Any], console: Console) -> None:
    """Print the phases, ratios, accuracy, targets and cost tables."""
    machine = report["machine"]
    console.print(
        f"\n[bold]{report['model']}[/bold] served by [bold]{report['server_runtime']}[/bold] · "
        f"{report['corpus']['texts']} texts ({report['corpus']['source']}) · "
        f"{machine['cores']} cores · {cpu_description(machine, 'no vector extensions found')} · no GPU used"
    )
    console.print(_phases_table(report["phases"]))
    cached = {
        figures["label"]: figures["cached_texts"]
        for figures in report["phases"].values()
        if figures.get("cached_texts")
    }
    if cached:
        console.print(
            "[red]The server answered texts from its embedding cache, so those figures are not compute: "
            f"{cached}"
        )
    failed = {
        figures["label"]: figures["failures"]
        for figures in report["phases"].values()
        if figures.get("failed")
    }
    if failed:
        console.print(f"[red]Requests the server failed (not in the figures above): {failed}")
    console.print(_pairs_table("ratio (same run)", report["ratios"], 3))
    if report["accuracy"]:
        console.print(_accuracy_table(report["accuracy"]))
    if report["targets"]:
        console.print(_targets_table(report["targets"]))
    console.print(_pairs_table("server and conditions", {**report["server"], **report["conditions"]}, 2))
    if "cost" in report:
        console.print(_cost_table(report["cost"]))


def _phases_table(phases: dict[str, dict[str, Any]]) -> Table:
    table = Table(
        title="throughput and latency (best of repeats)",
        caption="latency in ms · CPU: share of all cores used by the server (server rows) or by the "
        "in-process baseline · client CPU: the load generator's own share",
    )
    for column in ("phase", "texts/s", "tokens/s", "p50", "p95", "p99", "CPU", "client CPU"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for figures in phases.values():
        table.add_row(
            figures["label"],
            _figure(figures["texts_per_s"]),
            _figure(figures["tokens_per_s"], 0),
            _figure(figures["p50_ms"], 2),
            _figure(figures["p95_ms"], 2),
            _figure(figures["p99_ms"], 2),
            _share(figures.get("server_cpu_share") or figures.get("inprocess_cpu_share")),
            _share(figures.get("client_cpu_share")),
        )
    return table


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _pairs_table(title: str, pairs: dict[str, Any], digits: int) -> Table:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in pairs.items():
        table.add_row(
            key.replace("_", " "),
            _figure(value, digits) if not isinstance(value, list) else " ".join(map(str, value)),
        )
    return table


def _accuracy_table(accuracy: dict[str, dict[str, float]]) -> Table:
    table = Table(title="vectors: cosine similarity")
    for column in ("compared", "mean", "min", "rows"):
        table.add_column(column, justify="left" if column == "compared" else "right")
    for name, summary in accuracy.items():
        table.add_row(
            name.replace("_", " "), f"{summary['mean']:.6f}", f"{summary['min']:.6f}", str(summary["rows"])
        )
    return table


def _targets_table(targets: list[dict[str, Any]]) -> Table:
    table = Table(title="issue 7 targets")
    for column in ("target", "measured", "met"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for target in targets:
        table.add_row(
            target["target"], _figure(target["measured"], 3), "[green]yes" if target["met"] else "[red]no"
        )
    return table


def _cost_table(cost: dict[str, Any]) -> Table:
    table = Table(title=f"cost at ${cost['price_per_hour']}/hour and {cost['tokens_per_s']:,.0f} tokens/s")
    for column in ("offer", "$ / million tokens", "self-hosting breaks even at"):
        table.add_column(column, justify="left" if column == "offer" else "right")
    table.add_row("keepwarm on this machine, fully used", f"{cost['usd_per_million_tokens']:.4f}", "")
    for offer in cost["openai"]:
        even = offer["break_even_utilisation"]
        table.add_row(
            offer["offer"],
            f"{offer['usd_per_million_tokens']:.4f}",
            f"{even:.1%} busy" if even <= 1 else "never (> 100 %)",
        )
    return table
