#!/usr/bin/env python3
"""How long exact search takes over a large corpus, and how much memory it holds.

Writes `--documents` random unit vectors of `--dims` values to a `.npy` file in blocks
(as `keepwarm eval` writes a corpus's vectors), then finds the top `--k` documents of
`--queries` random queries by brute force with `keepwarm.evaluation.exact_search`, and
prints the time of each step, the CPU time of the search (all threads), and this
process's peak resident memory. The file is
deleted at the end.

    python scripts/exact_search.py --documents 1000000 --dims 384 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from keepwarm.evaluation import VectorFile, exact_search

_WRITE_ROWS = 16_384


def _unit_vectors(rng: np.random.Generator, rows: int, dims: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, dims), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--scratch-dir", type=Path, default=None, help="where the vector file goes (default: temp)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.scratch_dir) as folder:
        began = time.perf_counter()
        vectors = VectorFile(Path(folder) / "corpus.npy", args.documents, args.dims)
        for start in range(0, args.documents, _WRITE_ROWS):
            vectors.write(start, _unit_vectors(rng, min(_WRITE_ROWS, args.documents - start), args.dims))
        written = time.perf_counter() - began
        queries = _unit_vectors(rng, args.queries, args.dims)
        began, cpu = time.perf_counter(), time.process_time()
        exact_search(queries, vectors.blocks(), args.k)
        searched, cpu = time.perf_counter() - began, time.process_time() - cpu
        vectors.close()
    print(
        json.dumps(
            {
                "documents": args.documents,
                "dims": args.dims,
                "queries": args.queries,
                "k": args.k,
                "file_mib": round(args.documents * args.dims * 4 / 2**20),
                "write_seconds": round(written, 2),
                "search_seconds": round(searched, 2),
                "search_cpu_seconds": round(cpu, 2),  # all threads: wall time × cores used
                "queries_per_second": round(args.queries / searched, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
