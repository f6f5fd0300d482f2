"""`keepwarm bench`: load generators, in-process baselines, statistics and the report."""

from keepwarm.bench.corpus import CorpusError, corpus_texts, load_corpus, sample
from keepwarm.bench.report import build_report
from keepwarm.bench.runner import MODES, BenchOptions, run_benchmark

__all__ = [
    "MODES",
    "BenchOptions",
    "CorpusError",
    "build_report",
    "corpus_texts",
    "load_corpus",
    "run_benchmark",
    "sample",
]
