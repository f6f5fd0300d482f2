"""Query–document pairs as a scoring model reads them, and what its rows of logits mean.

Tokenizing. A cross-encoder reads a pair through its tokenizer's pair template
(`[CLS] query [SEP] document [SEP]`, segment ids 0 then 1), as `CrossEncoder` does; a
decoder reranker reads one sequence, the catalog's `rerank_template` with the query and
the document in place. Either way the document is a contiguous run of tokens, found by
segment (pairs) or by character offsets (templates), so the window rules are one:

- a pair that fits the model's window is kept as it is;
- a longer one loses document tokens only (`truncate`, from the end or, as TEI's
  `truncation_direction = "Left"` asks, from the start), or is split into windows that
  each hold the whole query and template and one stretch of the document (`chunk`; the
  document's score is its best window's); `error` refuses it, naming the document;
- a query that leaves no room for a single document token is refused, naming the query.

Scoring. A row holds a cross-encoder's logits (one per label) or a decoder reranker's
(yes, no) logits. A reranker's raw score is its one logit (or yes minus no); its score is
that through the model's activation, as `CrossEncoder.predict` computes it. A classifier's
probabilities are its logits through the activation, with a softmax where the activation is
the identity (probabilities are asked for, and identity gives none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer

from keepwarm.catalog.spec import ModelSpec
from keepwarm.engine.tokenization import Tokenized, check_lengths
from keepwarm.errors import InvalidRequest

DOCUMENT = "{document}"


@dataclass(frozen=True)
class PairOptions:
    """How to fit pairs into the model's window."""

    overflow: str = "error"  # error | truncate | chunk
    from_start: bool = False  # truncate the document's start rather than its end
    max_document_tokens: int | None = None  # Cohere's max_tokens_per_doc


class PairTokenizer:
    """Tokenizes (query, document) pairs for one scoring model (see the module docs)."""

    def __init__(self, spec: ModelSpec) -> None:
        self._tokenizer = Tokenizer.from_file(str(spec.directory / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.spec = spec
        self.max_tokens = spec.max_tokens

    def encode(
        self,
        query: str,
        documents: Sequence[str],
        options: PairOptions,
        *,
        max_chars: int | None = None,
        param: str = "documents",
    ) -> Tokenized:
        """Token ids (and segment ids) of each pair's windows; `owners` maps windows to documents."""
        if max_chars is not None and len(query) > max_chars:
            raise InvalidRequest(
                f"The query has {len(query):,} characters; the maximum is {max_chars:,}.", param="query"
            )
        return self.encode_pairs([(query, d) for d in documents], options, max_chars=max_chars, param=param)

    def encode_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        options: PairOptions,
        *,
        max_chars: int | None = None,
        param: str = "documents",
    ) -> Tokenized:
        """`encode` for pairs that each have their own first text (TEI's `/predict` takes such batches)."""
        check_lengths([first for first, _ in pairs], max_chars, "characters", param=param)
        check_lengths([second for _, second in pairs], max_chars, "characters", param=param)
        encodings, spans = self._encode_all(pairs)
        ids: list[np.ndarray] = []
        types: list[np.ndarray] = []
        owners: list[int] = []
        for index, (encoding, span) in enumerate(zip(encodings, spans, strict=True)):
            windows = self._windows(encoding, span, options, index, param)
            for window in windows:
                ids.append(np.asarray(encoding.ids, dtype=np.int64)[window])
                types.append(np.asarray(encoding.type_ids, dtype=np.int64)[window])
            owners.extend([index] * len(windows))
        chunked = len(owners) != len(pairs)
        return Tokenized(ids, owners if chunked else None, types if self.spec.pairs else None)

    def _encode_all(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[Encoding], list[range]]:
        """Each pair's full encoding and the token positions of its document."""
        template = self.spec.rerank_template
        if template is None:
            encodings = self._encode_batch(list(pairs))
            return encodings, [_segment_span(e) for e in encodings]
        at = template.index(DOCUMENT)
        befores = [template[:at].replace("{query}", query) for query, _ in pairs]
        texts = [
            before + document + template[at + len(DOCUMENT) :].replace("{query}", query)
            for before, (query, document) in zip(befores, pairs, strict=True)
        ]
        encodings = self._encode_batch(texts)
        spans = [
            _offset_span(e, len(before), len(before) + len(d))
            for e, before, (_, d) in zip(encodings, befores, pairs, strict=True)
        ]
        return encodings, spans

    def _encode_batch(self, inputs: list[str] | list[tuple[str, str]]) -> list[Encoding]:
        try:
            return self._tokenizer.encode_batch(inputs)
        except TypeError:  # the only strings `tokenizers` refuses are those with lone surrogates
            raise InvalidRequest(
                "The query or a document is not valid Unicode text (it has a lone surrogate)."
            ) from None

    def _windows(
        self, encoding: Encoding, span: range, options: PairOptions, index: int, param: str
    ) -> list[np.ndarray]:
        """Positions kept in each window of one pair (document tokens cut or split, the rest whole)."""
        total = len(encoding.ids)
        fixed = total - len(span)
        room = self.max_tokens - fixed
        if room < 1:
            raise InvalidRequest(
                f"The query is too long: with it, the model's {self.max_tokens}-token window has no room "
                f"for any document token ({fixed} tokens before any document). Shorten the query.",
                param="query",
                code="context_length_exceeded",
            )
        document = np.arange(span.start, span.stop)
        if options.max_document_tokens is not None:
            document = _cut(document, options.max_document_tokens, options.from_start)
        if len(document) <= room:
            stretches = [document]
        elif options.overflow == "chunk":
            stretches = [document[start : start + room] for start in range(0, len(document), room)]
        elif options.overflow == "truncate":
            stretches = [_cut(document, room, options.from_start)]
        else:
            raise InvalidRequest(
                f"{param}[{index}] with the query is {fixed + len(document)} tokens, more than this model's "
                f"window of {self.max_tokens}. Shorten it, or ask for truncation.",
                param=f"{param}[{index}]",
                code="context_length_exceeded",
            )
        head, tail = np.arange(span.start), np.arange(span.stop, total)
        return [np.concatenate([head, stretch, tail]) for stretch in stretches]


def _cut(positions: np.ndarray, keep: int, from_start: bool) -> np.ndarray:
    return positions[len(positions) - keep :] if from_start else positions[:keep]


def _segment_span(encoding: Encoding) -> range:
    """Positions of the second sequence's own tokens (not the template's special tokens)."""
    positions = [
        i
        for i, (sequence, special) in enumerate(
            zip(encoding.sequence_ids, encoding.special_tokens_mask, strict=True)
        )
        if sequence == 1 and not special
    ]
    return range(positions[0], positions[-1] + 1) if positions else _empty_span(encoding)


def _offset_span(encoding: Encoding, start: int, stop: int) -> range:
    """Positions of the tokens that overlap characters [start, stop) of the text."""
    positions = [
        i
        for i, ((begin, end), special) in enumerate(
            zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
        )
        if not special and end > start and begin < stop
    ]
    return range(positions[0], positions[-1] + 1) if positions else _empty_span(encoding)


def _empty_span(encoding: Encoding) -> range:
    end = len(encoding.ids) - 1  # before the closing special token
    return range(end, end)


def raw_scores(spec: ModelSpec, rows: np.ndarray) -> np.ndarray:
    """A reranker's scores before its activation [rows, 1]: its one logit, or logit(yes) - logit(no)."""
    if spec.head == "causal-lm":
        return rows[:, :1] - rows[:, 1:2]
    return rows


def relevance(spec: ModelSpec, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A reranker's (raw score, score) per row, 1-D float64."""
    raw = raw_scores(spec, rows)
    return raw[:, 0].astype(np.float64), activate(spec, raw)[:, 0]


def activate(spec: ModelSpec, logits: np.ndarray) -> np.ndarray:
    """Logits [rows, labels] through the model's activation, in float64."""
    values = logits.astype(np.float64)
    if spec.activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-values))
    if spec.activation == "softmax":
        return _softmax(values)
    return values


def probabilities(spec: ModelSpec, logits: np.ndarray) -> np.ndarray:
    """A classifier's label probabilities [rows, labels] (see the module docs)."""
    if spec.activation == "identity":
        return _softmax(logits.astype(np.float64))
    return activate(spec, logits)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
