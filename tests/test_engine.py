"""The engine as a library, on the real model.

Exact vectors however inputs share model calls, cached artifacts, no torch at start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import MODEL, assert_same_vectors

from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.engine import CallLimitSettings, EmbedOptions, Engine, EngineSettings

TRUNCATE = EmbedOptions(truncate=True)


@pytest.mark.parametrize("rows,budget", [(1, 512), (7, 2048), (64, 8192)])
def test_vectors_do_not_depend_on_how_inputs_share_model_calls(
    data_dir, reference, corpus, rows, budget
) -> None:  # noqa: ANN001
    limits = CallLimitSettings(max_call_tokens=budget, max_call_rows=rows, max_queue_tokens=10**6)
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir, EngineSettings(calls=limits)) as engine:
        texts = corpus[:50]
        result = engine.embed_sync(MODEL, texts, TRUNCATE)
    assert_same_vectors(result.vectors, reference.encode(texts))
    assert result.tokens == int(reference.tokenize(texts)["attention_mask"].sum())


def test_threads_embedding_at_once_get_their_own_vectors(data_dir, reference, corpus) -> None:  # noqa: ANN001
    groups = [corpus[i : i + 3] for i in range(0, 60, 3)]
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir) as engine, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda g: engine.embed_sync(MODEL, g, TRUNCATE), groups))
    for group, result in zip(groups, results, strict=True):
        assert_same_vectors(result.vectors, reference.encode(group))


def test_artifact_is_built_once_and_verified(data_dir) -> None:  # noqa: ANN001
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir):
        pass
    artifacts = [p for p in (data_dir / "artifacts").iterdir() if not p.name.startswith(".")]
    minilm = [p for p in artifacts if p.name.startswith(MODEL) and (p / "model.onnx").exists()]
    assert len(minilm) == 1  # one export; the other folders hold measurements derived from it
    metadata = json.loads((minilm[0] / "artifact.json").read_text())
    assert metadata["min_cosine_to_torch"] >= 0.99999
    assert (minilm[0] / metadata["file"]).is_file()


def test_a_server_serving_a_cached_artifact_imports_no_runtime_it_does_not_run(data_dir) -> None:  # noqa: ANN001
    """torch and transformers only build artifacts; ONNX Runtime only runs on `runtime = "onnx"`.

    Each one left out is resident memory a server never uses (tens of MB for ONNX Runtime).
    """
    with Engine([DEFAULT_ENTRY.to_spec()], data_dir):  # make sure the artifact exists
        pass
    script = (
        "import sys; from pathlib import Path; import keepwarm.cli.serve, keepwarm.server;"
        "from keepwarm.catalog import DEFAULT_ENTRY; from keepwarm.engine import Engine;"
        f"e = Engine([DEFAULT_ENTRY.to_spec()], Path({str(data_dir)!r})); e.load();"
        "v = e.embed_sync('all-minilm-l6-v2', ['hello']).vectors;"
        "runtime = e.resolve('all-minilm-l6-v2').runtime.name; e.close();"
        "print(v.shape, runtime, *(m in sys.modules for m in ('torch', 'transformers', 'onnxruntime')))"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    runtime, *imported = output.split()[-4:]
    assert imported == ["False", "False", str(runtime == "onnx")], output


def test_a_changed_model_gets_a_new_artifact(tmp_path: Path, model_dir: Path) -> None:
    from helpers.models import tiny_bert

    from keepwarm.catalog import ModelEntry

    directory = tiny_bert(tmp_path / "tiny", model_dir, seed=3)
    entry = ModelEntry(name="tiny", source=str(directory))
    with Engine([entry.to_spec()], tmp_path / "data") as first:
        before = first.embed_sync("tiny", ["same text"]).vectors
    tiny_bert(directory, model_dir, seed=4)  # new weights, same place
    with Engine([entry.to_spec()], tmp_path / "data") as second:
        after = second.embed_sync("tiny", ["same text"]).vectors
    assert len(list((tmp_path / "data" / "artifacts").glob("tiny-*/model.onnx"))) == 2
    assert not np.allclose(before, after)
