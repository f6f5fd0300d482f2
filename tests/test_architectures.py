"""Each architecture, end to end (config → export → runtime → pooling → vectors), on both runtimes.

Tiny randomly initialised models built here are checked against sentence-transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_vectors
from helpers.models import tiny_bert, tiny_decoder, tiny_modernbert, tiny_xlm_roberta
from sentence_transformers import SentenceTransformer

from keepwarm.catalog import ModelEntry
from keepwarm.engine import Engine

TEXTS = [
    "short",
    "a much longer sentence with many words, so that padding matters for the shorter rows",
    "def double(x):\n    return x * 2",
    " ".join(f"word{i}" for i in range(60)),  # longer than ModernBERT's local attention window here
]

BUILDERS = {
    "bert": lambda d, tok: tiny_bert(d, tok, pooling="max", normalize=True),
    "xlm-roberta": tiny_xlm_roberta,
    "qwen2": lambda d, tok: tiny_decoder(d, architecture="qwen2", padding_side="left"),
    "mistral": lambda d, tok: tiny_decoder(d, architecture="mistral", padding_side="right"),
    "modernbert": tiny_modernbert,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_dir) -> dict[str, Path]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("architectures")
    return {name: build(root / name, model_dir) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def arch_data(tmp_path_factory) -> Path:  # noqa: ANN001
    return tmp_path_factory.mktemp("arch-data")


def _embed(
    directory: Path, data: Path, runtime: str, texts: list[str], prompt: str | None = None
) -> np.ndarray:
    from keepwarm.engine import EmbedOptions

    engine = Engine([ModelEntry("m", str(directory), overrides=(("runtime", runtime),)).to_spec()], data)
    engine.load()
    try:
        return engine.embed_sync("m", texts, EmbedOptions(prompt_name=prompt)).vectors
    finally:
        engine.close()


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("architecture", list(BUILDERS))
def test_architecture_matches_sentence_transformers(built, arch_data, architecture, runtime) -> None:  # noqa: ANN001
    directory = built[architecture]
    expected = SentenceTransformer(str(directory), device="cpu").encode(TEXTS)
    assert_same_vectors(_embed(directory, arch_data, runtime, TEXTS), expected)


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_token_pooling_is_padding_independent(built, arch_data, side) -> None:  # noqa: ANN001
    reference = SentenceTransformer(str(built["qwen2"]), device="cpu")
    reference.tokenizer.padding_side = side
    assert_same_vectors(_embed(built["qwen2"], arch_data, "onnx", TEXTS), reference.encode(TEXTS))


def test_instruction_prompt_matches_sentence_transformers(built, arch_data) -> None:  # noqa: ANN001
    reference = SentenceTransformer(str(built["qwen2"]), device="cpu")
    expected = reference.encode(TEXTS, prompt_name="query")
    assert_same_vectors(_embed(built["qwen2"], arch_data, "onnx", TEXTS, prompt="query"), expected)
    assert not np.allclose(expected, reference.encode(TEXTS), atol=1e-3)
