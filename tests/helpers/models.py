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


def _write_sentence_transformers_files(
    directory: Path, pooling: str, normalize: bool, max_seq_length: int
) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
    (directory / "modules.json").write_text(json.dumps(modules))
    hidden = json.loads((directory / "config.json").read_text())["hidden_size"]
    keys = {
        "mean": "pooling_mode_mean_tokens",
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }
    pooling_config = {
        "word_embedding_dimension": hidden,
        **{key: name == pooling for name, key in keys.items()},
    }
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))


def _copy_wordpiece_tokenizer(source: Path, directory: Path) -> None:
    """Reuse MiniLM's WordPiece tokenizer (vocabulary 30522) for an encoder built here."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(source / name, directory / name)


def tiny_bert(
    directory: Path,
    tokenizer_source: Path,
    *,
    pooling: str = "mean",
    normalize: bool = False,
    max_seq_length: int = 128,
    seed: int = 0,
    vocab_size: int = 30522,
) -> Path:
    """A 2-layer BERT with MiniLM's tokenizer and random weights.

    A `vocab_size` below the tokenizer's 30522 makes a model that fails at run time on
    the ids it has no embedding for: a real way for one input to break a batch.
    """
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    transformers.BertModel(config).eval().save_pretrained(directory)
    _copy_wordpiece_tokenizer(tokenizer_source, directory)
    _write_sentence_transformers_files(directory, pooling, normalize, max_seq_length)
    return directory


_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _bpe_tokenizer(directory: Path, padding_side: str) -> int:
    """Train a small byte-level BPE tokenizer shaped like Qwen2's, appending an end-of-text token.

    The normalizer and pre-tokenizer are Qwen2's own (transformers rebuilds them by model
    type, so the tokenizer.json must carry the same ones, as real Qwen2 checkpoints do).
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    from keepwarm.runtimes.probe import PROBE_TEXTS

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|pad|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(PROBE_TEXTS) * 3, trainer)
    eos = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", eos)]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|pad|>",
                "padding_side": padding_side,
                "model_max_length": 512,
            }
        )
    )
    return tokenizer.get_vocab_size()


def tiny_decoder(
    directory: Path, *, architecture: str = "qwen2", padding_side: str = "left", seed: int = 0
) -> Path:
    """A 2-layer Qwen2 or Mistral decoder with last-token pooling and an instruction prompt."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = _bpe_tokenizer(directory, padding_side)
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    if architecture == "qwen2":
        model = transformers.Qwen2Model(transformers.Qwen2Config(**common))
    else:
        model = transformers.MistralModel(transformers.MistralConfig(**common, sliding_window=None))
    model.eval().save_pretrained(directory)
    _write_sentence_transformers_files(directory, "lasttoken", True, 512)
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {
                    "query": "Instruct: Given a question, retrieve passages that answer it\nQuery: ",
                    "document": "",
                },
                "default_prompt_name": None,
            }
        )
    )
    return directory


def tiny_xlm_roberta(directory: Path, tokenizer_source: Path, *, seed: int = 0) -> Path:
    """A 2-layer XLM-RoBERTa (positions offset by the padding index) with CLS pooling."""
    torch.manual_seed(seed)
    config = transformers.XLMRobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=0,
        type_vocab_size=1,
    )
    transformers.XLMRobertaModel(config).eval().save_pretrained(directory)
    _copy_wordpiece_tokenizer(tokenizer_source, directory)
    _write_sentence_transformers_files(directory, "cls", True, 256)
    return directory


# ModernBERT's special-token ids, as MiniLM's WordPiece vocabulary (the copied tokenizer) numbers them
_MODERNBERT_TOKENS = dict(
    pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102
)


def tiny_modernbert(directory: Path, tokenizer_source: Path, *, seed: int = 0) -> Path:
    """A 2-layer ModernBERT with an 8K context (local and global attention) and mean pooling."""
    torch.manual_seed(seed)
    config = transformers.ModernBertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=8192,
        **_MODERNBERT_TOKENS,
        local_attention=16,
        global_attn_every_n_layers=2,
    )
    transformers.ModernBertModel(config).eval().save_pretrained(directory)
    _copy_wordpiece_tokenizer(tokenizer_source, directory)
    _write_sentence_transformers_files(directory, "mean", True, 8192)
    return directory


def tiny_cross_encoder(
    directory: Path,
    tokenizer_source: Path,
    *,
    architecture: str = "bert",
    labels: tuple[str, ...] = ("score",),
    seed: int = 0,
) -> Path:
    """A 2-layer BERT, XLM-RoBERTa or ModernBERT `*ForSequenceClassification` with MiniLM's tokenizer.

    One label makes a reranker; several make a classifier (their names in `id2label`).
    XLM-RoBERTa and ModernBERT have no segment types, so their tokenizer is told not to
    produce segment ids.
    """
    torch.manual_seed(seed)
    common = dict(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=len(labels),
        initializer_range=0.3,  # scores that differ clearly between documents (0.02 makes them all ~0.5)
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if architecture == "bert":
        model = transformers.BertForSequenceClassification(
            transformers.BertConfig(**common, max_position_embeddings=512)
        )
    elif architecture == "modernbert":  # local and global attention layers, as the family has
        config = transformers.ModernBertConfig(
            **common,
            max_position_embeddings=512,
            **_MODERNBERT_TOKENS,
            local_attention=16,
            global_attn_every_n_layers=2,
        )
        model = transformers.ModernBertForSequenceClassification(config)
    else:
        config = transformers.XLMRobertaConfig(
            **common, max_position_embeddings=514, pad_token_id=0, type_vocab_size=1
        )
        model = transformers.XLMRobertaForSequenceClassification(config)
    model.eval().save_pretrained(directory)
    _copy_wordpiece_tokenizer(tokenizer_source, directory)
    if architecture != "bert":
        tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
        tokenizer_config["model_input_names"] = ["input_ids", "attention_mask"]
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def tiny_yes_no_reranker(directory: Path, *, architecture: str = "qwen3", seed: int = 0) -> Path:
    """A 2-layer Qwen2 or Qwen3 `*ForCausalLM` with "yes" and "no" tokens (Qwen3-Reranker's shape)."""
    from tokenizers import AddedToken, Tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    _bpe_tokenizer(directory, "left")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.add_tokens([AddedToken("yes", normalized=False), AddedToken("no", normalized=False)])
    tokenizer.post_processor = None  # Qwen's tokenizer adds no special tokens of its own
    tokenizer.save(str(directory / "tokenizer.json"))
    torch.manual_seed(seed)
    common = dict(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=0,
        tie_word_embeddings=False,
        initializer_range=0.3,
    )
    if architecture == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=8))
    model.eval().save_pretrained(directory)
    return directory
