"""Tiny, randomly initialised models in sentence-transformers layout, built by the tests.

They exercise the real loading, export and pooling code on architectures other than
the bundled MiniLM, with reference vectors from sentence-transformers itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import transformers


def _write_sentence_transformers_files(directory: Path, pooling: str, normalize: bool, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    hidden = json.loads((directory / "config.json").read_text())["hidden_size"]
    keys = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens", "lasttoken": "pooling_mode_lasttoken"}
    pooling_config = {"word_embedding_dimension": hidden, **{key: name == pooling for name, key in keys.items()}}
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))


def tiny_bert(directory: Path, tokenizer_source: Path, *, pooling: str = "mean", normalize: bool = False,
              max_seq_length: int = 128, seed: int = 0, vocab_size: int = 30522) -> Path:
    """A 2-layer BERT with MiniLM's tokenizer and random weights.

    A `vocab_size` below the tokenizer's 30522 makes a model that fails at run time on
    the ids it has no embedding for: a real way for one input to break a batch.
    """
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=512,
    )
    transformers.BertModel(config).eval().save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(tokenizer_source / name, directory / name)
    _write_sentence_transformers_files(directory, pooling, normalize, max_seq_length)
    return directory
