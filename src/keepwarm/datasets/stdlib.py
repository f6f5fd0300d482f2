"""Prose and code from the running Python's standard library, read deterministically.

- `documented_functions`: every function or method in the standard library's own source
  files (tests, demos and IDLE left out) whose docstring has at least a few words, with
  its code with the docstring removed: the CodeSearchNet construction, offline.
- `documented_definitions`: the docstrings of its modules and classes.
- `doc_sections`: the reference documentation that ships with Python
  (`pydoc_data.topics`, what `help("assert")` prints), one section per topic;
  `doc_subsections` cuts the topics at every heading instead.
- `bench_corpus`: a mix of both kinds of text for benchmarks and tests.

Files are read in sorted order and nothing is random, so a given Python version always
yields the same texts in the same order.
"""

from __future__ import annotations

import ast
import functools
import re
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Folders whose files are tests, demos, generated tables or a GUI, not library code.
_SKIPPED = {
    "test",
    "tests",
    "idlelib",
    "turtledemo",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "ensurepip",
    "pydoc_data",
    "encodings",
    "unittest",
}
_MIN_DOC_WORDS = 6
_MAX_CODE_CHARS = 4000
_BENCH_SIZE = 4096
_MIN_PARAGRAPH_WORDS = 30


@dataclass(frozen=True)
class Function:
    """A documented function: where it is, its docstring, and its code without the docstring."""

    id: str  # module.qualified_name
    docstring: str
    code: str


@dataclass(frozen=True)
class Definition:
    """A module or class with a docstring."""

    id: str  # module, or module.qualified_name of the class
    docstring: str


@dataclass(frozen=True)
class DocSection:
    """One topic of Python's reference documentation."""

    id: str  # the topic's key in pydoc_data.topics
    title: str
    body: str


def _library_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(
        path for path in root.rglob("*.py") if not _SKIPPED.intersection(path.relative_to(root).parts[:-1])
    )


def _functions_in(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function in a module with its qualified name, classes and nesting followed."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{prefix}{child.name}", child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def _without_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's source lines with its docstring statement cut out, dedented."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    doc = node.body[0]
    kept = lines[first : doc.lineno - 1] + lines[doc.end_lineno : node.end_lineno]
    return textwrap.dedent("\n".join(kept)).strip() + "\n" if len(node.body) > 1 else ""


@functools.cache
def _scan() -> tuple[tuple[Function, ...], tuple[Definition, ...]]:
    """One pass over the library's source: documented functions, and documented modules and classes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    functions, definitions = [], []
    for path in _library_files():
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        if docstring := ast.get_docstring(tree):
            definitions.append(Definition(module, docstring))
        definitions += [Definition(f"{module}.{name}", doc) for name, doc in _class_docstrings(tree)]
        lines = source.splitlines()
        for name, node in _functions_in(tree):
            docstring = ast.get_docstring(node)
            if not docstring or len(docstring.split()) < _MIN_DOC_WORDS:
                continue
            code = _without_docstring(lines, node)
            if code and len(code) <= _MAX_CODE_CHARS:
                functions.append(Function(f"{module}.{name}", docstring, code))
    return tuple(functions), tuple(definitions)


def _class_docstrings(tree: ast.AST) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of every documented class, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                if docstring := ast.get_docstring(child):
                    yield f"{prefix}{child.name}", docstring
                yield from walk(child, f"{prefix}{child.name}.")

    yield from walk(tree, "")


def documented_functions() -> tuple[Function, ...]:
    """Documented functions of the standard library with a body besides the docstring."""
    return _scan()[0]


def documented_definitions() -> tuple[Definition, ...]:
    """The standard library's documented modules and classes, in file order."""
    return _scan()[1]


@functools.cache
def doc_sections() -> tuple[DocSection, ...]:
    """Python's reference documentation topics, title (first line) apart from the text below it."""
    from pydoc_data.topics import topics

    sections = []
    for key in sorted(topics):
        text = topics[key].strip()
        title, _, rest = text.partition("\n")
        body = rest.lstrip("*=-^ \n").strip()
        if body:
            sections.append(DocSection(key, title.strip(), body))
    return tuple(sections)


# A heading: a line underlined by one repeated punctuation character, as reStructuredText writes it.
_HEADING = re.compile(r"^(\S[^\n]*)\n([*=\-^~#])\2{2,}\n", re.MULTILINE)


@functools.cache
def doc_subsections() -> tuple[DocSection, ...]:
    """The reference documentation cut at every heading: each heading with the text up to the next.

    Topics overlap (a topic can be a section of a larger one), so one text may appear
    under several topics; it is kept once, under the first topic in sorted order.
    """
    from pydoc_data.topics import topics

    sections: dict[str, DocSection] = {}
    for key in sorted(topics):
        headings = list(_HEADING.finditer(topics[key]))
        for n, heading in enumerate(headings):
            end = headings[n + 1].start() if n + 1 < len(headings) else None
            body = topics[key][heading.end() : end].strip()
            if body and body not in sections:
                sections[body] = DocSection(f"{key}#{n}", heading.group(1).strip(), body)
    return tuple(sections.values())


def _paragraphs() -> list[str]:
    """Paragraphs of the reference documentation long enough to be real prose."""
    return [
        paragraph.strip()
        for section in doc_sections()
        for paragraph in section.body.split("\n\n")
        if len(paragraph.split()) >= _MIN_PARAGRAPH_WORDS
    ]


def bench_corpus(size: int = _BENCH_SIZE) -> list[str]:
    """`size` distinct real texts in a fixed order: code, docstrings and documentation prose.

    Code and docstrings alternate; every fifth text is a paragraph of the reference
    documentation, so lengths range from one line to past a small model's window.
    """
    functions, paragraphs = documented_functions(), _paragraphs()
    texts: dict[str, None] = {}  # insertion-ordered, each text once
    n_function = n_paragraph = 0
    while len(texts) < size:
        if len(texts) % 5 == 4 and n_paragraph < len(paragraphs):
            texts[paragraphs[n_paragraph]] = None
            n_paragraph += 1
        else:
            function = functions[n_function // 2]
            texts[function.code if n_function % 2 else function.docstring] = None
            n_function += 1
    return list(texts)
