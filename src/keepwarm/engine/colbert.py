"""ColBERT inputs as PyLate builds them: a side's marker after the first token, queries expanded with masks.

A request is a query or a document side (its `input_type` / prompt name `query`, else
document, PyLate's `is_query`). Each text is tokenized with the model's template, cut to
the side's limit (its length less one for the marker, catalog/colbert.py), and the
side's marker id goes in after the first token ([CLS]). A query with
`do_query_expansion` is first padded up to that limit with the mask token, so every
query has `query_length` tokens; the model attends to those expansion tokens only with
`attend_to_expansion_tokens` (attention 0 otherwise, as padding), yet their vectors are
always answered. A document answers the vectors of its tokens except those whose id is a
`skiplist_words` entry (punctuation by default): they are still read by the model.

So each window carries its own attention mask and which of its token vectors are kept
(`Tokenized.attention`, `Tokenized.keep`); the worker pads both with the ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keepwarm.catalog.colbert import DOCUMENT, QUERY, SIDES, ColbertLayout
from keepwarm.catalog.spec import ModelSpec
from keepwarm.engine.tokenization import ModelTokenizer, Tokenized
from keepwarm.errors import ConfigError


def side(prompt_name: str | None) -> str:
    """A request's side: query when it says so, else document (PyLate's documents are the default here)."""
    return QUERY if prompt_name == QUERY else DOCUMENT


def _named_token(directory: Path, key: str) -> str | None:
    """A special token's text (`mask_token`, `unk_token`, ...) from the tokenizer's config files."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = directory / name
        value = json.loads(path.read_text(encoding="utf-8")).get(key) if path.is_file() else None
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


class ColbertTokenizer:
    """Tokenizes one ColBERT model's queries and documents (see the module docs)."""

    def __init__(self, spec: ModelSpec, tokenizer: ModelTokenizer) -> None:
        assert spec.colbert is not None
        self.layout: ColbertLayout = spec.colbert
        self._marker_ids = {name: self._marker(spec, tokenizer, name) for name in SIDES}
        self._expansion_id = self._expansion(spec, tokenizer)
        unknown = self._token(spec, tokenizer, "unk_token")
        # PyLate looks each word up as one token: a word that is none stands for the unknown token
        skipped = [tokenizer.token_id(word) for word in self.layout.skiplist_words]
        self._skiplist = np.array(
            sorted({unknown if found is None else found for found in skipped} - {None}), dtype=np.int64
        )

    @staticmethod
    def _token(spec: ModelSpec, tokenizer: ModelTokenizer, key: str) -> int | None:
        text = _named_token(spec.directory, key)
        return None if text is None else tokenizer.token_id(text)

    def _marker(self, spec: ModelSpec, tokenizer: ModelTokenizer, name: str) -> int | None:
        prefix = self.layout.prefix(name)
        if not prefix:
            return None
        found = tokenizer.token_id(prefix)
        if found is None:
            raise ConfigError(f"model '{spec.name}': its tokenizer has no token {prefix!r} ({name}_prefix)")
        return found

    def _expansion(self, spec: ModelSpec, tokenizer: ModelTokenizer) -> int:
        """PyLate's expansion id: the mask token, else the end-of-text token, else padding."""
        for key in ("mask_token", "eos_token"):
            if (found := self._token(spec, tokenizer, key)) is not None:
                return found
        return tokenizer.pad_id

    def encode(
        self,
        tokenizer: ModelTokenizer,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        side: str,
        overflow: str,
        prompt_name: str | None = None,
        max_chars: int | None = None,
    ) -> Tokenized:
        """`inputs` as the model reads them on `side`: cut to its limit, expanded, marked.

        `tokenizer` is the model's, maybe within a request's lower limit; the other
        arguments are ModelTokenizer.encode's.
        """
        limited = tokenizer.within(self.layout.limit(side))
        tokenized = limited.encode(inputs, overflow=overflow, prompt_name=prompt_name, max_chars=max_chars)
        rows = [self._mark(ids, side) for ids in tokenized.ids]
        return Tokenized(
            [ids for ids, _, _ in rows],
            tokenized.owners,
            attention=[attention for _, attention, _ in rows],
            keep=[keep for _, _, keep in rows],
        )

    def _mark(self, ids: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One window's ids, attention mask and kept vectors (see the module docs)."""
        layout = self.layout
        attention = np.ones(len(ids), dtype=np.int64)
        if side == QUERY and layout.do_query_expansion:
            expansion = layout.limit(side) - len(ids)
            ids = np.concatenate([ids, np.full(expansion, self._expansion_id, dtype=np.int64)])
            attended = 1 if layout.attend_to_expansion_tokens else 0
            attention = np.concatenate([attention, np.full(expansion, attended, dtype=np.int64)])
        marker = self._marker_ids[side]
        if marker is not None:
            ids = np.concatenate([ids[:1], [marker], ids[1:]]).astype(np.int64)
            attention = np.concatenate([attention[:1], [1], attention[1:]])
        keep = np.ones(len(ids), dtype=bool) if side == QUERY else ~np.isin(ids, self._skiplist)
        return ids, attention, keep
