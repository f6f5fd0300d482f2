"""Recall@10 of each compressed dtype against float32, on a built-in retrieval set (docs/compressed.md).

    python scripts/compressed_recall.py [--model all-minilm-l6-v2] [--set docs] [--queries 500]

Documents and queries are embedded in-process with the served model; int8/uint8 use the
model version's calibrated ranges (built from runtimes/probe.py's calibration texts, which
the queries here are not part of).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.datasets.builtin import builtin_set
from keepwarm.engine import EmbedOptions, Engine
from keepwarm.evaluation.compressed import recall_vs_float

DTYPES = ["int8", "uint8", "binary", "ubinary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="docs")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    dataset = builtin_set(args.set, args.queries, args.documents)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="keepwarm-recall-"))
    spec = DEFAULT_ENTRY.to_spec()
    with Engine([spec], data_dir) as engine:
        options = EmbedOptions(truncate=True, output_dtypes=("int8",))
        documents = engine.embed_sync(spec.name, list(dataset.documents.values()), options)
        queries = engine.embed_sync(spec.name, list(dataset.queries.values()), options)
    recalls = recall_vs_float(queries.vectors, documents.vectors, queries.ranges, DTYPES)
    print(f"{dataset.description}; model {spec.name}@{queries.model.short_version}")
    print("| dtype | bytes per vector | recall@10 vs float32 |")
    print("|---|---|---|")
    dims = documents.vectors.shape[1]
    print(f"| float | {dims * 4} | 1.000 |")
    for dtype in DTYPES:
        size = dims if dtype.endswith("int8") else dims // 8
        print(f"| {dtype} | {size} | {recalls[dtype]:.3f} |")


if __name__ == "__main__":
    main()
