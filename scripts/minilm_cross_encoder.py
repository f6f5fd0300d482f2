"""Write a MiniLM-L6 cross-encoder for benchmarks: all-MiniLM-L6-v2's encoder under a one-label head.

It has the shape of cross-encoder/ms-marco-MiniLM-L-6-v2 (6 layers, 384 wide), so its
speed is that of the common small reranker; its scores mean nothing (the head is random).
Usage: python scripts/minilm_cross_encoder.py OUTPUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
import transformers

from keepwarm.catalog.sources import DEFAULT_MODEL_SOURCE, resolve_source


def main(output: Path) -> None:
    source = resolve_source(DEFAULT_MODEL_SOURCE)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(source, num_labels=1)
    model.eval().save_pretrained(output)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(source / name, output / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
