"""Reading what a server recorded for a model version's compressed outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keepwarm.outputs.compress import ranges_of


def calibration_ranges(data_dir: Path, model: str) -> np.ndarray:
    """The int8/uint8 ranges of `model`'s calibration vectors, as recorded in the server's artifact store."""
    (path,) = (data_dir / "artifacts").glob(f"{model}-*-calibration-*/calibration.npy")
    return ranges_of(np.load(path))


def tiny_splade(directory: Path, tokenizer_source: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT masked-LM saved by sentence-transformers as a SparseEncoder (MLM + SpladePooling)."""
    import torch
    import transformers
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.models import MLMTransformer, SpladePooling

    from helpers.models import _copy_wordpiece_tokenizer

    torch.manual_seed(seed)
    raw = directory.parent / f"{directory.name}-raw"
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    transformers.BertForMaskedLM(config).eval().save_pretrained(raw)
    _copy_wordpiece_tokenizer(tokenizer_source, raw)
    encoder = SparseEncoder(modules=[MLMTransformer(str(raw), max_seq_length=128), SpladePooling("max")])
    encoder.save(str(directory))
    return directory


def tiny_bge_m3(directory: Path, tokenizer_source: Path, *, seed: int = 0) -> Path:
    """bge-m3's layout on a tiny XLM-RoBERTa: CLS-pooled normalised dense, plus sparse and ColBERT heads."""
    import torch

    from helpers.models import tiny_xlm_roberta

    tiny_xlm_roberta(directory, tokenizer_source, seed=seed)
    torch.manual_seed(seed + 1)
    torch.save(torch.nn.Linear(32, 1).state_dict(), directory / "sparse_linear.pt")
    torch.save(torch.nn.Linear(32, 24).state_dict(), directory / "colbert_linear.pt")
    return directory


def bge_m3_reference(directory: Path, texts: list[str]) -> tuple[list[dict[int, float]], list[np.ndarray]]:
    """bge-m3's published formulas in PyTorch: lexical weights and ColBERT vectors per text."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    sparse_linear, colbert_linear = torch.nn.Linear(32, 1), torch.nn.Linear(32, 24)
    sparse_linear.load_state_dict(torch.load(directory / "sparse_linear.pt"))
    colbert_linear.load_state_dict(torch.load(directory / "colbert_linear.pt"))
    unused = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    weights, vectors = [], []
    with torch.no_grad():
        for text in texts:
            encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**encoded).last_hidden_state
            token_weights = torch.relu(sparse_linear(hidden))[0, :, 0]
            lexical: dict[int, float] = {}
            for token, weight in zip(encoded["input_ids"][0].tolist(), token_weights.tolist(), strict=True):
                if token not in unused and weight > 0:
                    lexical[token] = max(weight, lexical.get(token, 0.0))
            weights.append(lexical)
            colbert = torch.nn.functional.normalize(colbert_linear(hidden[:, 1:]), dim=-1)[0]
            vectors.append(colbert.numpy())
    return weights, vectors
