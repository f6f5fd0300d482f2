"""`keepwarm reembed --ray`: a folder of corpus shards embedded on Ray Data, resumable by shard.

The corpus is two JSONL files; the reference is the in-process `keepwarm reembed` of
the same rows in one file. The crash is real: the command is killed with SIGKILL once
its first parts are on disk, and the next run must embed only the shards still missing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import MODEL, RunningServer, wait_for
from helpers.ray import RayCluster
from helpers.vectors import assert_same_vectors

from keepwarm.reembed import read_vectors

SHARD_ROWS = 6
RUN_TIMEOUT = 300


def _reembed(corpus: Path, output: Path, data_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "keepwarm", "reembed", str(corpus), str(output), "--model", MODEL,
        "--checkpoint-rows", str(SHARD_ROWS), "--data-dir", str(data_dir), "--quiet", *options,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def rows(corpus: list[str]) -> list[dict[str, str]]:
    return [{"id": f"doc-{n}", "text": text} for n, text in enumerate(corpus[:60])]


@pytest.fixture(scope="module")
def shards(rows: list[dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus-shards")
    for number, part in enumerate((rows[:27], rows[27:])):
        (folder / f"shard-{number}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    return folder


@pytest.fixture(scope="module")
def in_process(rows: list[dict[str, str]], server: RunningServer, data_dir: Path, tmp_path_factory) -> Path:  # noqa: ANN001
    """The in-process reembed of the same rows (`server` built the model's artifact first)."""
    folder = tmp_path_factory.mktemp("in-process")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = subprocess.run(
        _reembed(corpus, folder / "out", data_dir), capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    return folder / "out"


def test_crashed_run_resumes_with_only_missing_shards_and_matches_in_process(
    cluster: RayCluster, shards: Path, in_process: Path, data_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    command = _reembed(shards, output, data_dir, "--ray", cluster.address, "--actor-cpus", "0.5")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(list(output.glob("part-*.parquet"))) >= 2, timeout=RUN_TIMEOUT)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    written = {path.name: path.stat().st_mtime_ns for path in output.glob("part-*.parquet")}
    planned = 5 + 6  # 27 rows then 33 rows, in shards of 6
    assert 2 <= len(written) < planned

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["shards_done"] == planned - len(written)
    assert {
        p.name: p.stat().st_mtime_ns for p in output.glob("part-*.parquet") if p.name in written
    } == written
    ids, vectors, manifest = read_vectors(output)
    reference_ids, reference, reference_manifest = read_vectors(in_process)
    assert ids == reference_ids
    assert manifest["version"] == reference_manifest["version"] == summary["version"]
    # fp32-equivalent, the bar every runtime meets: OpenVINO may run bf16 on this CPU, where a vector
    # moves with the batch it was computed in (shards of 6 rows here, larger batches in-process)
    assert_same_vectors(vectors, reference)
