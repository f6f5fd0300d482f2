"""Text the project builds itself, offline: the benchmark corpus and built-in evaluation sets.

Everything here comes from what every Python install has (the standard library's source
and its documentation topics), so tests, benchmarks and evaluations need no download and
give the same texts for a given Python version.
"""

from keepwarm.datasets.stdlib import (
    Definition,
    DocSection,
    Function,
    bench_corpus,
    doc_sections,
    doc_subsections,
    documented_definitions,
    documented_functions,
)

__all__ = [
    "Definition",
    "DocSection",
    "Function",
    "bench_corpus",
    "doc_sections",
    "doc_subsections",
    "documented_definitions",
    "documented_functions",
]
