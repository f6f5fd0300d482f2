"""What each dashboard page shows, computed from what the engine, the store and the batch service report.

Plain functions from their outputs (`/v1/models` bodies, usage rows, Batch objects,
vectors) to the numbers a page displays, so each is tested without a browser and the
pages show exactly what the API would answer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

from keepwarm.api.responses import model_body
from keepwarm.catalog.versions import version_label
from keepwarm.cost import OPENAI_PRICES, Pricing, cost_report
from keepwarm.engine.engine import ModelView
from keepwarm.errors import InvalidRequest
from keepwarm.runtimes.accuracy import FP32_EQUIVALENT
from keepwarm.store import UsageRow, usage_report

OPENAI_MODEL = "text-embedding-3-small"
MAX_USAGE_DAYS = 366
_DEFAULT_USAGE_DAYS = 30
_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
_HISTOGRAM_BINS = 20


# -- models and versions -------------------------------------------------------------------------


def task_of(view: ModelView) -> str:
    """What a model version does.

    Every model keepwarm serves today embeds text. This is the one place that answers
    the question: when the catalog learns other tasks (rerank, classify), it reads
    them from the spec here, and the playground's rerank panel offers the models
    whose task is "rerank" (see `rerankers`).
    """
    return "embed"


def rerankers(views: list[ModelView]) -> list[str]:
    """The served models that rerank documents (none yet: see `task_of`)."""
    return [view.spec.name for view in views if view.current and task_of(view) == "rerank"]


def model_rows(views: list[ModelView]) -> list[dict[str, Any]]:
    """One row per configured version, in catalog order: what `/v1/models` says about it, and its task."""
    return [
        {**model_body(view, []), "task": task_of(view), "pin": version_label(view.spec.name, view.version)}
        for view in views
    ]


# what the versions page compares, side by side
VERSION_FIELDS = (
    ("source", "Source"),
    ("dtype", "Precision"),
    ("runtime", "Runtime"),
    ("accuracy", "Accuracy"),
    ("retrieval", "Search vs fp32"),
    ("compressed", "Compressed search vs float"),
    ("dimensions", "Dimensions"),
    ("max_tokens", "Max tokens"),
    ("pooling", "Pooling"),
    ("normalize", "Normalize"),
    ("overflow", "Overflow"),
    ("prompts", "Prompts"),
    ("load", "Load"),
    ("loaded", "Loaded"),
)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) or "–"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "–" if value is None else str(value)


def version_groups(views: list[ModelView]) -> list[dict[str, Any]]:
    """Every name with its versions side by side, the current one first."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in model_rows(views):
        accuracy = dict(row.get("accuracy") or {})
        row["accuracy"], row["retrieval"] = accuracy, _retrieval(accuracy.pop("retrieval", None))
        row["compressed"] = _compressed(row.get("compressed_retrieval"))
        row["shown"] = {field: _shown(row.get(field)) for field, _ in VERSION_FIELDS}
        groups[row["id"]].append(row)
    return [
        {
            "name": name,
            "aliases": rows[0]["aliases"],
            "versions": sorted(rows, key=lambda r: not r["current"]),
        }
        for name, rows in groups.items()
    ]


def _retrieval(check: dict[str, Any] | None, *, sample: bool = True) -> str | None:
    """A build's measured search quality against its reference, in one line (None: not a measured build)."""
    if not check:
        return None
    recall = check.get("recall@10_vs_reference")  # builds recorded before it was measured lack it
    return (
        (f"recall@10 {recall:.3f}, " if recall is not None else "")
        + f"nDCG@10 {check['ndcg@10']:.4f} vs {check['reference_ndcg@10']:.4f} "
        + f"({check['ndcg@10_change']:+.4f} ± {check['noise_2se']:.4f})"
        + (f" on {check['dataset']}" if sample else "")
    )


def _compressed(checks: dict[str, dict[str, Any]] | None) -> str | None:
    """Each compressed dtype's measured search quality against float, one clause each, then the sample."""
    if not checks:
        return None
    clauses = [f"{dtype}: {_retrieval(check, sample=False)}" for dtype, check in checks.items()]
    return "; ".join(clauses) + f" on {next(iter(checks.values()))['dataset']}"


def model_choices(views: list[ModelView]) -> list[str]:
    """What a user may pick as `model`: each name (its current version) and every version pinned."""
    names = [view.spec.name for view in views if view.current]
    return [*names, *(version_label(view.spec.name, view.version) for view in views)]


def batch_budgets(views: list[ModelView]) -> dict[str, int]:
    """Padded tokens per model call of each loaded version, by the label its engine metrics carry."""
    budgets = {}
    for view in views:
        budget = model_body(view, []).get("max_batch_tokens") if view.loaded is not None else None
        if budget:
            budgets[version_label(view.spec.name, view.version)] = budget
    return budgets


# -- usage and cost ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    """Which usage to show: UTC days `since`..`until` (inclusive), optionally one key and one model."""

    since: date
    until: date
    key: str | None = None
    model: str | None = None

    @classmethod
    def parse(cls, params: dict[str, str], today: date) -> UsageQuery:
        """From the page's query string; the last 30 days by default. InvalidRequest names a bad field."""
        until = _day(params.get("until"), "until") or today
        since = _day(params.get("since"), "since") or until - timedelta(days=_DEFAULT_USAGE_DAYS - 1)
        if since > until:
            raise InvalidRequest("'since' must not be after 'until'.", param="since")
        if (until - since).days >= MAX_USAGE_DAYS:
            raise InvalidRequest(f"Choose at most {MAX_USAGE_DAYS} days.", param="since")
        return cls(since, until, params.get("key") or None, params.get("model") or None)

    @property
    def days(self) -> list[str]:
        return [
            (self.since + timedelta(days=n)).isoformat() for n in range((self.until - self.since).days + 1)
        ]

    def select(self, rows: list[UsageRow]) -> list[UsageRow]:
        return [row for row in rows if self.model is None or row.model == self.model]


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"'{name}' must be a day like 2026-01-31, got {value[:40]!r}.", param=name
        ) from None


def today_utc() -> date:
    return datetime.now(UTC).date()


def usage_view(rows: list[UsageRow], pricing: Pricing, query: UsageQuery) -> dict[str, Any]:
    """Rows with cost, per-day series by model for the charts, totals by key and model, the break-even."""
    report = usage_report(query.select(rows), pricing)
    days = query.days
    position = {day: n for n, day in enumerate(days)}
    daily: dict[str, dict[str, list[float]]] = {m: {} for m in ("tokens", "requests", "cost")}
    for row in report["data"]:
        for measure, series in daily.items():
            line = series.setdefault(row["model"], [0.0] * len(days))
            line[position[row["day"]]] += row[measure]
    return {
        "report": report,
        "days": days,
        "daily": daily,
        "by_key": _totals(report["data"], "key_name"),
        "by_model": _totals(report["data"], "model"),
        "break_even": break_even(report["total"], pricing),
    }


def _totals(data: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = {}
    for row in data:
        total = totals.setdefault(row[field], {"name": row[field], "requests": 0, "tokens": 0, "cost": 0.0})
        for measure in ("requests", "tokens", "cost"):
            total[measure] += row[measure]
    return sorted(totals.values(), key=lambda total: -total["tokens"])


def break_even(total: dict[str, Any], pricing: Pricing) -> dict[str, Any]:
    """This traffic's cost here and at text-embedding-3-small, and where self-hosting breaks even."""
    price = OPENAI_PRICES[OPENAI_MODEL]
    tokens, seconds = total["tokens"], total["compute_seconds"]
    result: dict[str, Any] = {
        "openai_model": OPENAI_MODEL,
        "openai_price": price,
        "openai_cost": tokens / 1e6 * price,
        "our_cost": total["cost"],
        "our_price": total["cost"] / tokens * 1e6 if tokens else None,
        "priced": pricing.per_hour > 0 or pricing.per_million_tokens > 0,
        "full_use": None,
    }
    if pricing.per_hour > 0 and seconds > 0 and tokens:
        report = cost_report(pricing.per_hour, tokens / seconds)
        offer = next(o for o in report["openai"] if o["offer"] == OPENAI_MODEL)
        result["full_use"] = {
            "tokens_per_second": report["tokens_per_s"],
            "price": report["usd_per_million_tokens"] + pricing.per_million_tokens,
            "utilisation": offer["break_even_utilisation"],
        }
    return result


CSV_COLUMNS = (
    "day",
    "key_id",
    "key_name",
    "model",
    "version",
    "requests",
    "tokens",
    "cache_hits",
    "compute_seconds",
    "cost",
)


# -- batch jobs ----------------------------------------------------------------------------------


def batch_row(batch: dict[str, Any]) -> dict[str, Any]:
    """A Batch object with its progress, rate and time left.

    The rate is finished requests per second of the runner's time on the batch
    (`cost.seconds`, committed with each chunk, like the counts), so it is exact for a
    job of any length and does not count time the job waited behind another.
    """
    counts = batch["request_counts"]
    done, total = counts["completed"] + counts["failed"], counts["total"]
    seconds = batch["cost"]["seconds"]
    rate = done / seconds if done and seconds else None
    return {
        **batch,
        "done": done,
        "percent": 100.0 if batch["status"] == "completed" else (100.0 * done / total if total else 0.0),
        "rate": rate,
        "eta": (total - done) / rate if batch["status"] == "in_progress" and rate else None,
        "active": batch["status"] in _ACTIVE,
        "cancellable": batch["status"] in ("validating", "in_progress"),
    }


# -- versions diff and the playground ------------------------------------------------------------


def cosine_histogram(cosines: np.ndarray) -> dict[str, Any]:
    """The distribution of per-text cosines between two versions, with the interchangeability line."""
    low = min(float(cosines.min()), FP32_EQUIVALENT - 1e-4)
    counts, edges = np.histogram(np.clip(cosines, low, 1.0), bins=_HISTOGRAM_BINS, range=(low, 1.0))
    return {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "threshold": FP32_EQUIVALENT,
    }


def similarity(vectors: np.ndarray) -> list[list[float]]:
    """Cosine similarity of every pair of vectors."""
    unit = vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return [[round(float(v), 6) for v in row] for row in unit @ unit.T]


def ranking(matrix: list[list[float]]) -> list[dict[str, float]]:
    """Documents (rows 1..n) by cosine to the query (row 0), best first."""
    scores = [{"index": n - 1, "score": score} for n, score in enumerate(matrix[0]) if n > 0]
    return sorted(scores, key=lambda item: -item["score"])
