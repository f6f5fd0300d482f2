"""Two retrieval sets built offline from the running Python's standard library.

- **code-search** (CodeSearchNet's construction): the query is the first paragraph of a
  function's docstring, the relevant document is that function's code with the
  docstring removed, and every other function's code is a distractor.
- **docs** (documentation retrieval): the query is a section title of the reference
  documentation (`pydoc_data.topics`, cut at every heading) or the summary line of a
  module's or class's docstring; the relevant document is the rest of that section or
  docstring.

Docstring queries shorter than four words, documents shorter than twenty words, and
every pair whose query or document text occurs more than once (its answer would be
ambiguous). Pairs are put in the order of the SHA-1 of their id, so the first N are a
fixed, unbiased sample; a set's size is capped by taking the first `queries` pairs as
queries and the first `documents` documents (those queries' answers first) as the
corpus. For a given Python version the sets are always the same.
"""

from __future__ import annotations

import hashlib
import platform
from collections import Counter
from collections.abc import Callable, Iterable

from keepwarm.datasets.retrieval import RetrievalSet
from keepwarm.datasets.stdlib import doc_subsections, documented_definitions, documented_functions

DEFAULT_QUERIES = 500
DEFAULT_DOCUMENTS = 1_000
_MIN_QUERY_WORDS = 4
_MIN_DOCUMENT_WORDS = 20

Pair = tuple[str, str, str]  # id, query, relevant document


def code_search_pairs() -> list[Pair]:
    """Every (function id, first docstring paragraph, code without docstring), before filtering."""
    pairs = [(f.id, _first_paragraph(f.docstring), f.code) for f in documented_functions()]
    return [pair for pair in pairs if len(pair[1].split()) >= _MIN_QUERY_WORDS]


def docs_pairs() -> list[Pair]:
    """Every (section or definition id, title or summary line, the rest), before filtering."""
    pairs = [(section.id, section.title, section.body) for section in doc_subsections()]
    for definition in documented_definitions():
        summary, _, rest = definition.docstring.partition("\n\n")
        if len(summary.split()) >= _MIN_QUERY_WORDS:
            pairs.append((definition.id, " ".join(summary.split()), rest.strip()))
    return pairs


BUILTIN: dict[str, tuple[Callable[[], list[Pair]], str]] = {
    "code-search": (code_search_pairs, "a function's docstring -> its code"),
    "docs": (docs_pairs, "a documentation title or summary line -> the rest of its text"),
}


def builtin_set(
    name: str, queries: int | None = DEFAULT_QUERIES, documents: int | None = DEFAULT_DOCUMENTS
) -> RetrievalSet:
    """The built-in set `name`, capped at `queries` queries and `documents` documents (None: all)."""
    if name not in BUILTIN:
        raise KeyError(name)
    build, what = BUILTIN[name]
    pairs = _usable(build())
    chosen = pairs[:queries] if queries is not None else pairs
    corpus = pairs[: max(documents, len(chosen))] if documents is not None else pairs
    description = (
        f"built-in {name} ({what}): {len(chosen)} queries, {len(corpus)} documents, "
        f"from the Python {platform.python_version()} standard library"
    )
    return RetrievalSet(
        name,
        documents={pair_id: document for pair_id, _, document in corpus},
        queries={pair_id: query for pair_id, query, _ in chosen},
        qrels={pair_id: {pair_id: 1} for pair_id, _, _ in chosen},
        description=description,
    )


def _usable(pairs: Iterable[Pair]) -> list[Pair]:
    """Long enough, unambiguous pairs, in their fixed hash order."""
    pairs = [pair for pair in pairs if len(pair[2].split()) >= _MIN_DOCUMENT_WORDS]
    queries, documents = Counter(pair[1] for pair in pairs), Counter(pair[2] for pair in pairs)
    unique = [pair for pair in pairs if queries[pair[1]] == 1 and documents[pair[2]] == 1]
    return sorted(unique, key=lambda pair: hashlib.sha1(pair[0].encode()).digest())


def _first_paragraph(docstring: str) -> str:
    return " ".join(docstring.split("\n\n", 1)[0].split())
