"""A long-context model for the benchmarks: ModernBERT-shaped, 8K tokens, random weights.

The cost of a full 8K window against chunking depends on the architecture (ModernBERT
alternates local and global attention), not on trained weights, so a small random
model built here with transformers shows the shape of that cost on any machine, with
nothing downloaded. It reuses the bundled model's WordPiece tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

LONG_CONTEXT_TOKENS = 8192
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def modernbert_8k(directory: Path, tokenizer_source: Path, *, seed: int = 0) -> Path:
    """Build (once) a 3-layer ModernBERT with an 8K context and mean pooling in `directory`."""
    if (directory / "modules.json").is_file():
        return directory
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.ModernBertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=LONG_CONTEXT_TOKENS,
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        bos_token_id=101,
        eos_token_id=102,
        local_attention=128,
        global_attn_every_n_layers=3,
    )
    transformers.ModernBertModel(config).eval().save_pretrained(directory)
    for name in _TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, directory / name)
    _write_sentence_transformers_layout(directory, config.hidden_size)
    return directory


def _write_sentence_transformers_layout(directory: Path, hidden: int) -> None:
    """modules.json, mean pooling and the 8K limit, as sentence-transformers saves a model."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True})
    )
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": LONG_CONTEXT_TOKENS}))
    (directory / "modules.json").write_text(json.dumps(modules))  # last: marks the model complete
