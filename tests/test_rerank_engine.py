"""Rerankers and classifiers in-process: every architecture on every runtime, windows, cache, int8.

Engines share one data directory, so each tiny model is exported once and every runtime
after the first reuses the verified ONNX graph. Call limits are given, not measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers.models import tiny_cross_encoder, tiny_yes_no_reranker
from sentence_transformers import CrossEncoder

from keepwarm.catalog import ModelEntry
from keepwarm.engine import CallLimitSettings, Engine, EngineSettings, ScoreOptions
from keepwarm.errors import ConfigError

QUERY = "how do I reset my password"
DOCUMENTS = [
    "Open settings, choose security and press reset password.",
    "The weather is nice today.",
    "Passwords must be at least twelve characters long.",
    "Our office is closed on public holidays.",
]
LABELS = ("spam", "ham", "unsure")
TEMPLATE = "Judge the document.\nQuery: {query}\nDocument: {document}\nRelevant:"
SETTINGS = EngineSettings(calls=CallLimitSettings(max_call_tokens=1024, max_padding_tokens=64))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerank-engine-models")
    return {
        "bert-1": tiny_cross_encoder(root / "bert-1", model_dir, seed=11),
        "xlm-1": tiny_cross_encoder(root / "xlm-1", model_dir, architecture="xlm-roberta", seed=12),
        "modernbert-1": tiny_cross_encoder(
            root / "modernbert-1", model_dir, architecture="modernbert", seed=17
        ),
        "bert-3": tiny_cross_encoder(root / "bert-3", model_dir, labels=LABELS, seed=13),
        "xlm-3": tiny_cross_encoder(
            root / "xlm-3", model_dir, architecture="xlm-roberta", labels=LABELS, seed=14
        ),
        "qwen2": tiny_yes_no_reranker(root / "qwen2", architecture="qwen2", seed=15),
        "qwen3": tiny_yes_no_reranker(root / "qwen3", architecture="qwen3", seed=16),
    }


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rerank-engine-data")


def _engine(name: str, source: Path, data_dir: Path, **overrides: object) -> Engine:
    if name.startswith("qwen"):
        overrides = {"task": "rerank", "rerank_template": TEMPLATE, **overrides}
    entry = ModelEntry(name, str(source), overrides=tuple(overrides.items()))
    return Engine([entry.to_spec()], data_dir, SETTINGS)


def _yes_no_reference(directory: Path, documents: list[str]) -> np.ndarray:
    """P(yes) of the softmax over the yes/no logits at the prompt's last token (Qwen3-Reranker's formula)."""
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    texts = [TEMPLATE.replace("{query}", QUERY).replace("{document}", d) for d in documents]
    scores = []
    for text in texts:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([tokenizer(text)["input_ids"]])).logits[0, -1]
        scores.append(torch.softmax(logits[[no, yes]], dim=0)[1].item())
    return np.array(scores)


def _class_probabilities(directory: Path, texts: list[str]) -> np.ndarray:
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    return torch.softmax(logits, dim=1).numpy()


# every architecture on PyTorch; one of each head (BERT reranker, XLM-R classifier, Qwen3) exported
# to ONNX and run on ONNX Runtime and OpenVINO too (exports are what costs time)
EVERY_RUNTIME = [(name, runtime) for name in ("bert-1", "qwen3") for runtime in ("onnx", "openvino", "torch")]


@pytest.mark.parametrize(
    ("name", "runtime"),
    [
        *EVERY_RUNTIME,
        ("xlm-1", "torch"),
        ("modernbert-1", "torch"),
        ("modernbert-1", "onnx"),
        ("qwen2", "torch"),
    ],
)
def test_rerankers_score_as_the_reference_on_every_runtime(
    models, artifacts, name: str, runtime: str
) -> None:  # noqa: ANN001
    if name.startswith("qwen"):
        expected = _yes_no_reference(models[name], DOCUMENTS)
    else:
        expected = CrossEncoder(str(models[name])).predict([(QUERY, d) for d in DOCUMENTS])
    with _engine(name, models[name], artifacts, runtime=runtime) as engine:
        scores = engine.rerank_sync(name, QUERY, DOCUMENTS).scores
    assert np.abs(scores - expected).max() < 1e-4


@pytest.mark.parametrize(
    ("name", "runtime"), [("xlm-3", "onnx"), ("xlm-3", "openvino"), ("xlm-3", "torch"), ("bert-3", "torch")]
)
def test_classifiers_give_the_references_probabilities_on_every_runtime(
    models, artifacts, name: str, runtime: str
) -> None:  # noqa: ANN001
    with _engine(name, models[name], artifacts, runtime=runtime) as engine:
        result = engine.classify_sync(name, DOCUMENTS)
    assert result.labels == LABELS
    assert np.abs(result.probabilities - _class_probabilities(models[name], DOCUMENTS)).max() < 1e-4


def test_auto_chooses_a_runtime_whose_scores_are_fp32_equivalent(models, artifacts) -> None:  # noqa: ANN001
    expected = CrossEncoder(str(models["bert-1"])).predict([(QUERY, d) for d in DOCUMENTS])
    with _engine("bert-1", models["bert-1"], artifacts, runtime="auto") as engine:
        served = engine.resolve("bert-1")
        scores = engine.rerank_sync("bert-1", QUERY, DOCUMENTS).scores
    assert served.opened.artifact["auto_selection"]["choice"] in ("onnx", "openvino")
    assert np.abs(scores - expected).max() < 1e-4


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_int8_rerankers_report_rank_agreement_measured_at_load(models, artifacts, runtime: str) -> None:  # noqa: ANN001
    with _engine("bert-1", models["bert-1"], artifacts, runtime=runtime, dtype="int8") as engine:
        accuracy = engine.resolve("bert-1").info.accuracy
        scores = engine.rerank_sync("bert-1", QUERY, DOCUMENTS).scores
    assert accuracy["reference"] == "onnx fp32"
    assert -1.0 <= accuracy["rank_correlation"] <= 1.0 and accuracy["max_score_difference"] >= 0.0
    assert scores.shape == (len(DOCUMENTS),) and np.all((scores > 0) & (scores < 1))


def test_repeated_rerank_is_answered_from_the_pair_cache(models, artifacts) -> None:  # noqa: ANN001
    with _engine("bert-1", models["bert-1"], artifacts, runtime="torch") as engine:
        first = engine.rerank_sync("bert-1", QUERY, DOCUMENTS)
        again = engine.rerank_sync("bert-1", QUERY, DOCUMENTS)
        other_query = engine.rerank_sync("bert-1", "office hours", DOCUMENTS)
    assert (first.cached_inputs, again.cached_inputs, other_query.cached_inputs) == (0, len(DOCUMENTS), 0)
    assert np.array_equal(first.scores, again.scores)


def test_chunked_document_scores_its_best_window(models, artifacts) -> None:  # noqa: ANN001
    directory = models["bert-1"]
    document = " ".join(DOCUMENTS * 3)
    with _engine("bert-1", directory, artifacts, runtime="torch", overflow="chunk", max_tokens=24) as engine:
        result = engine.rerank_sync("bert-1", QUERY, [document])
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    query_ids = tokenizer(QUERY, add_special_tokens=False)["input_ids"]
    document_ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    room = 24 - len(query_ids) - 3  # [CLS] query [SEP] window [SEP]
    windows = [document_ids[start : start + room] for start in range(0, len(document_ids), room)]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    best = -np.inf
    for window in windows:
        ids = [tokenizer.cls_token_id, *query_ids, tokenizer.sep_token_id, *window, tokenizer.sep_token_id]
        types = [0] * (len(query_ids) + 2) + [1] * (len(window) + 1)
        with torch.inference_mode():
            logit = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits[0, 0]
        best = max(best, torch.sigmoid(logit).item())
    assert len(windows) > 1 and result.scores[0] == pytest.approx(best, abs=1e-4)


def test_truncation_from_the_start_keeps_the_documents_end(models, artifacts) -> None:  # noqa: ANN001
    document = "filler " * 200 + DOCUMENTS[0]
    with _engine("bert-1", models["bert-1"], artifacts, runtime="torch", max_tokens=32) as engine:
        tail = engine.rerank_sync(
            "bert-1", QUERY, [document], ScoreOptions(truncate=True, truncate_start=True)
        )
        alone = engine.rerank_sync("bert-1", QUERY, [DOCUMENTS[0]])
        head = engine.rerank_sync("bert-1", QUERY, [document], ScoreOptions(truncate=True))
    assert tail.tokens == head.tokens == 32
    assert tail.scores[0] != head.scores[0] and alone.tokens < 32


def test_cross_encoder_directory_is_a_reranker_or_classifier_by_its_labels(models) -> None:  # noqa: ANN001
    reranker = ModelEntry("r", str(models["bert-1"])).to_spec()
    classifier = ModelEntry("c", str(models["xlm-3"])).to_spec()
    assert (reranker.task, reranker.head, reranker.activation) == (
        "rerank",
        "sequence-classification",
        "sigmoid",
    )
    assert (classifier.task, classifier.labels, classifier.activation) == ("classify", LABELS, "identity")


def test_activation_is_read_from_config_sentence_transformers(models, tmp_path: Path) -> None:  # noqa: ANN001
    directory = tmp_path / "ce"
    directory.mkdir()
    for file in models["bert-1"].iterdir():
        (directory / file.name).symlink_to(file)
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.linear.Identity"})
    )
    assert ModelEntry("ce", str(directory)).to_spec().activation == "identity"


def test_catalog_refuses_scoring_settings_that_cannot_work(models) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="rerank needs a model with one output label"):
        ModelEntry("m", str(models["bert-3"]), overrides=(("task", "rerank"),)).to_spec()
    with pytest.raises(ConfigError, match="rerank_template"):
        ModelEntry("m", str(models["qwen3"]), overrides=(("task", "rerank"),)).to_spec()
    with pytest.raises(ConfigError, match="classifier answers once per input"):
        ModelEntry("m", str(models["bert-3"]), overrides=(("overflow", "chunk"),)).to_spec()
