"""Medians of alternate.sh output: texts/s (wall, per CPU second) and ratios to a base variant per repeat.

usage: python scripts/shape_policies/summarize.py OUT.jsonl [BASE_VARIANT]
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _ratios(runs: dict, name: str, base: str, field: str) -> list[float]:
    return [r[name][field] / r[base][field] for r in runs.values() if name in r and base in r]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    base = sys.argv[2] if len(sys.argv) > 2 else "exact"
    runs: dict[int, dict[str, dict]] = defaultdict(dict)
    padding, loads = {}, []
    for row in rows:
        runs[row["rep"]][row["variant"]] = row
        padding[row["variant"]] = row["padding_share"]
        loads.append(row["load"])
    print(f"{len(runs)} repeats, load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    for name in padding:
        wall = statistics.median(r[name]["texts_per_s"] for r in runs.values() if name in r)
        cpu = statistics.median(r[name]["texts_per_cpu_s"] for r in runs.values() if name in r)
        print(
            f"| {name} | {wall:.1f} | {_spread(_ratios(runs, name, base, 'texts_per_s'))} | {cpu:.1f} "
            f"| {_spread(_ratios(runs, name, base, 'texts_per_cpu_s'))} | {padding[name]:.2f} |"
        )


if __name__ == "__main__":
    main()
