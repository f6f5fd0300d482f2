"""An evaluation's results side by side: a terminal table and a quality-versus-speed plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from keepwarm.evaluation.metrics import METRICS

_COLUMNS = (
    ("dataset", "dataset"),
    ("pipeline", "pipeline"),
    ("model", "model"),
    ("version", "version"),
    ("dtype", "dtype"),
    ("dimensions", "dims"),
    *((metric, metric) for metric in METRICS),
    ("docs_per_s", "docs/s"),
    ("query_p95_ms", "query p95 ms"),
    ("usd_per_million_tokens", "$/1M tokens"),
)
_STYLES = {
    "dense": ("o", "C0"),
    "bm25": ("s", "C1"),
    "hybrid": ("^", "C2"),
    "sparse": ("v", "C4"),
    "multivector": ("P", "C5"),
}


def results_table(rows: list[dict[str, Any]]) -> Table:
    """One line per dataset and pipeline: quality, then speed and cost."""
    table = Table(title="retrieval evaluation", title_justify="left")
    for key, header in _COLUMNS:
        table.add_column(
            header, justify="left" if key in ("dataset", "pipeline", "model", "version", "dtype") else "right"
        )
    for row in rows:
        table.add_row(*(_cell(row[key], key) for key, _ in _COLUMNS))
    if any(row["cached_inputs"] for row in rows):
        table.caption = (
            "some inputs came from the server's embedding cache: their docs/s is not the model's speed"
        )
    return table


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key in METRICS:
        return f"{value:.4f}"
    if key == "usd_per_million_tokens":
        return f"{value:.4f}"
    return str(value)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """nDCG@10 against corpus throughput, one panel per dataset, one point per pipeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets, strict=True):
        for row in (r for r in rows if r["dataset"] == dataset):
            marker, color = _STYLES.get(row["pipeline"], ("D", "C3"))
            axis.scatter(row["docs_per_s"], row["ndcg@10"], marker=marker, color=color, s=50)
            label = (
                row["model"]
                if row["pipeline"] in ("dense", row["model"])
                else f"{row['pipeline']}: {row['model']}"
            )
            axis.annotate(
                label,
                (row["docs_per_s"], row["ndcg@10"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        axis.set_xscale("log")
        axis.set_title(dataset)
        axis.set_xlabel("documents per second while indexing (log)")
        axis.set_ylabel("nDCG@10")
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
