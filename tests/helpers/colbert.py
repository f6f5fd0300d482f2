"""Tiny ColBERT models saved in PyLate's layout, and PyLate's formula written out in plain PyTorch.

PyLate itself is not a test dependency; `pylate_reference` follows what
`pylate.models.ColBERT.encode` computes (tokenize to the side's length less one, insert
the side's marker after [CLS], pad queries to their length with [MASK] when expanding,
run the encoder, apply each Dense module, keep a query's every token or a document's
non-skiplist ones, L2-normalise each token vector), with transformers and torch only.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

from helpers.models import _copy_wordpiece_tokenizer

_ACTIVATIONS = {"identity": "torch.nn.modules.linear.Identity", "tanh": "torch.nn.modules.activation.Tanh"}


def tiny_pylate(
    directory: Path,
    tokenizer_source: Path,
    settings: dict[str, Any],
    dense: list[tuple[int, bool, str]],
    *,
    seed: int = 0,
) -> Path:
    """A 2-layer BERT with Dense modules `dense` [(out_features, bias, activation)] and `settings`.

    Marker tokens that are not in the vocabulary are added to the tokenizer (and the
    embeddings sized for them), as PyLate does before it saves a model.
    """
    torch.manual_seed(seed)
    directory.mkdir(parents=True)
    _copy_wordpiece_tokenizer(tokenizer_source, directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    markers = [settings.get("query_prefix", "[Q] "), settings.get("document_prefix", "[D] ")]
    tokenizer.add_tokens(
        [m for m in markers if m and tokenizer.convert_tokens_to_ids(m) == tokenizer.unk_token_id]
    )
    tokenizer.save_pretrained(str(directory))
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    transformers.BertModel(config).eval().save_pretrained(directory)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    features = 32
    for index, (out_features, bias, activation) in enumerate(dense, start=1):
        folder = f"{index}_Dense"
        (directory / folder).mkdir()
        linear = torch.nn.Linear(features, out_features, bias=bias)
        state = {f"linear.{name}": value.detach().contiguous() for name, value in linear.state_dict().items()}
        save_file(state, str(directory / folder / "model.safetensors"))
        layer = {
            "in_features": features,
            "out_features": out_features,
            "bias": bias,
            "activation_function": _ACTIVATIONS[activation],
            "use_residual": False,
        }
        (directory / folder / "config.json").write_text(json.dumps(layer))
        modules.append(
            {"idx": index, "name": str(index), "path": folder, "type": "pylate.models.Dense.Dense"}
        )
        features = out_features
    (directory / "modules.json").write_text(json.dumps(modules))
    st_config = {
        "model_type": "ColBERT",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "MaxSim",
    }
    (directory / "config_sentence_transformers.json").write_text(json.dumps({**st_config, **settings}))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 31, "do_lower_case": False})
    )
    return directory


def pylate_reference(directory: Path, texts: list[str], *, is_query: bool) -> list[np.ndarray]:
    """Each text's token vectors as PyLate's ColBERT encodes them (see the module docs), one batch."""
    config = json.loads((directory / "config_sentence_transformers.json").read_text())
    prefix = config.get("query_prefix" if is_query else "document_prefix", "[Q] " if is_query else "[D] ")
    length = config.get("query_length", 32) if is_query else config.get("document_length", 180)
    expand = config.get("do_query_expansion", True)
    attend = config.get("attend_to_expansion_tokens", False) and expand
    skiplist_words = config.get("skiplist_words", list(string.punctuation))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    tokenizer.pad_token_id = tokenizer.mask_token_id  # PyLate pads (and expands) with the mask token
    encoded = tokenizer(
        texts,
        padding="max_length" if is_query and expand else True,
        truncation=True,
        max_length=length - 1 if prefix else length,
        return_tensors="pt",
    )
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if prefix:
        marker = torch.full((len(texts), 1), tokenizer.convert_tokens_to_ids(prefix))
        ids = torch.cat([ids[:, :1], marker, ids[:, 1:]], dim=1)
        mask = torch.cat([mask[:, :1], torch.ones_like(marker), mask[:, 1:]], dim=1)
    if is_query and attend:
        mask = torch.ones_like(mask)
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        vectors = model(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
        ).last_hidden_state
        for module in json.loads((directory / "modules.json").read_text())[1:]:
            vectors = _dense(directory / module["path"])(vectors)
    if is_query:
        kept = torch.ones_like(ids, dtype=torch.bool) if expand else mask.bool()
    else:
        skiplist = torch.tensor([tokenizer.convert_tokens_to_ids(word) for word in skiplist_words])
        kept = ~torch.isin(ids, skiplist) & mask.bool()
    return [
        torch.nn.functional.normalize(row[keep], dim=-1).numpy()
        for row, keep in zip(vectors, kept, strict=True)
    ]


def _dense(folder: Path) -> torch.nn.Module:
    """A Dense module as sentence-transformers builds it: Linear, then its activation."""
    from safetensors.torch import load_file

    layer = json.loads((folder / "config.json").read_text())
    linear = torch.nn.Linear(layer["in_features"], layer["out_features"], bias=layer["bias"])
    linear.load_state_dict(
        {
            name.removeprefix("linear."): value
            for name, value in load_file(str(folder / "model.safetensors")).items()
        }
    )
    activation = torch.nn.Tanh() if layer["activation_function"].endswith("Tanh") else torch.nn.Identity()
    return torch.nn.Sequential(linear, activation)
