"""`keepwarm reembed`: a corpus into versioned vectors, in-process or through a server, resumably."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import MODEL, assert_same_vectors, wait_for

from keepwarm.reembed import read_vectors


def _keepwarm(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keepwarm", "reembed", *args, "--data-dir", str(data_dir), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def rows(corpus) -> list[dict[str, str]]:  # noqa: ANN001
    return [{"id": f"doc-{n}", "text": text} for n, text in enumerate(corpus[:48])]


@pytest.fixture(scope="module")
def jsonl_corpus(rows, tmp_path_factory) -> Path:  # noqa: ANN001
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_reembed_writes_ids_vectors_and_the_exact_model_version(
    jsonl_corpus, rows, tmp_path, data_dir, server, reference
) -> None:  # noqa: ANN001
    result = _keepwarm(
        str(jsonl_corpus),
        str(tmp_path / "out"),
        "--model",
        MODEL,
        "--checkpoint-rows",
        "16",
        "--price-per-million-tokens",
        "0.02",
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    ids, vectors, manifest = read_vectors(tmp_path / "out")
    assert ids == [row["id"] for row in rows]
    assert_same_vectors(vectors, reference.encode([row["text"] for row in rows]))
    served = httpx.get(f"{server.v1}/models/{MODEL}").json()
    assert manifest["version"] == summary["version"] == served["full_version"]
    assert len(manifest["parts"]) == 3 and manifest["rows"] == 48
    assert summary["cost"]["tokens"] > 0 and summary["cost"]["dollars"] == pytest.approx(
        summary["cost"]["tokens"] / 1e6 * 0.02, abs=1e-6
    )
    table = pq.read_table(tmp_path / "out")  # the folder reads as one Parquet dataset
    assert table.num_rows == 48 and table.schema.metadata[b"keepwarm.version"] == manifest["version"].encode()


def _write_csv(rows: list[dict[str, str]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text"])
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(rows: list[dict[str, str]], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("suffix,write", [(".csv", _write_csv), (".parquet", _write_parquet)])
def test_csv_and_parquet_corpora_give_the_same_vectors_as_jsonl(
    rows, tmp_path, data_dir, suffix, write
) -> None:  # noqa: ANN001
    subset = rows[:12]
    corpus = tmp_path / f"corpus{suffix}"
    write(subset, corpus)
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in subset))
    for source, out in ((corpus, "from-file"), (jsonl, "from-jsonl")):
        result = _keepwarm(
            str(source), str(tmp_path / out), "--model", MODEL, "--format", "numpy", data_dir=data_dir
        )
        assert result.returncode == 0, result.stderr
    ids, vectors, _ = read_vectors(tmp_path / "from-file")
    expected_ids, expected, _ = read_vectors(tmp_path / "from-jsonl")
    assert ids == expected_ids
    np.testing.assert_array_equal(vectors, expected)


def test_an_interrupted_run_resumes_without_losing_or_repeating_rows(
    jsonl_corpus, rows, tmp_path, data_dir
) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "keepwarm",
        "reembed",
        str(jsonl_corpus),
        str(out),
        "--model",
        MODEL,
        "--checkpoint-rows",
        "4",
        "--data-dir",
        str(data_dir),
        "--quiet",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _rows_committed(out) > 0, timeout=120)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done_before = _rows_committed(out)
    assert 0 < done_before < len(rows)
    result = _keepwarm(
        str(jsonl_corpus), str(out), "--model", MODEL, "--checkpoint-rows", "4", data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows_already_done"] == done_before and summary["rows"] == len(rows) - done_before
    ids, vectors, _ = read_vectors(out)
    assert ids == [row["id"] for row in rows] and vectors.shape == (len(rows), 384)


def _rows_committed(out: Path) -> int:
    try:
        return json.loads((out / "_keepwarm.json").read_text())["rows"]
    except (OSError, ValueError):
        return 0


def test_a_finished_corpus_is_not_embedded_twice(jsonl_corpus, tmp_path, data_dir) -> None:  # noqa: ANN001
    out = str(tmp_path / "out")
    assert _keepwarm(str(jsonl_corpus), out, "--model", MODEL, data_dir=data_dir).returncode == 0
    again = _keepwarm(str(jsonl_corpus), out, "--model", MODEL, data_dir=data_dir)
    assert again.returncode == 0 and json.loads(again.stdout)["rows"] == 0
    assert read_vectors(Path(out))[2]["rows"] == 48


def test_a_corpus_changed_since_it_was_embedded_is_refused(rows, tmp_path, data_dir) -> None:  # noqa: ANN001
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows[:8]))
    out = tmp_path / "out"
    assert _keepwarm(str(corpus), str(out), "--model", MODEL, data_dir=data_dir).returncode == 0
    with corpus.open("a") as handle:
        handle.write(json.dumps({"id": "added", "text": "a row added after the run"}) + "\n")
    again = _keepwarm(str(corpus), str(out), "--model", MODEL, data_dir=data_dir)
    assert again.returncode == 1 and "changed since 8 of its rows were embedded" in again.stderr
    assert read_vectors(out)[2]["rows"] == 8


def test_vectors_of_another_version_are_never_appended(jsonl_corpus, tmp_path, data_dir, tiny_dir) -> None:  # noqa: ANN001
    out = str(tmp_path / "out")
    first = _keepwarm(
        str(jsonl_corpus), out, "--model", "tiny", "--add-model", f"tiny={tiny_dir}", data_dir=data_dir
    )
    assert first.returncode == 0, first.stderr
    second = _keepwarm(str(jsonl_corpus), out, "--model", MODEL, data_dir=data_dir)
    assert second.returncode == 1 and "refusing to add vectors" in second.stderr


def test_a_pinned_version_that_is_not_served_is_refused(jsonl_corpus, tmp_path, data_dir) -> None:  # noqa: ANN001
    result = _keepwarm(
        str(jsonl_corpus), str(tmp_path / "out"), "--model", f"{MODEL}@0000dead", data_dir=data_dir
    )
    assert result.returncode == 1 and f"'{MODEL}@0000dead' does not exist" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_columns_are_named(tmp_path, data_dir) -> None:  # noqa: ANN001
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"doc": "1", "text": "x"}) + "\n")
    result = _keepwarm(str(corpus), str(tmp_path / "out"), "--model", MODEL, data_dir=data_dir)
    assert result.returncode == 1 and "row 1 needs an 'id'" in result.stderr


def test_reembed_through_a_running_server_uses_its_batch_api(
    jsonl_corpus, rows, tmp_path, server, data_dir, reference
) -> None:  # noqa: ANN001
    result = _keepwarm(
        str(jsonl_corpus),
        str(tmp_path / "out"),
        "--model",
        MODEL,
        "--url",
        server.v1,
        "--checkpoint-rows",
        "20",
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    ids, vectors, manifest = read_vectors(tmp_path / "out")
    assert ids == [row["id"] for row in rows]
    assert_same_vectors(vectors, reference.encode([row["text"] for row in rows]))
    assert manifest["version"] == httpx.get(f"{server.v1}/models/{MODEL}").json()["full_version"]
    assert json.loads(result.stdout)["cost"]["tokens"] > 0
