"""Versions: fingerprints, pinning, the 409 guard, upgrades with reload, and the embedding cache."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import start_server, wait_for
from helpers.models import tiny_bert

from keepwarm.catalog import DigestCache, ModelEntry, directory_fingerprint
from keepwarm.catalog.versions import model_version

TEXTS = ["the same question", "another document", "the same question"]


def _version(directory: Path, cache: DigestCache, **overrides: object) -> str:
    spec = ModelEntry("m", str(directory), overrides=tuple(overrides.items())).to_spec()
    return model_version(spec, directory_fingerprint(spec.directory, cache))


# -- fingerprints ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, model_dir) -> Path:  # noqa: ANN001
    return tiny_bert(tmp_path_factory.mktemp("fingerprint") / "m", model_dir, seed=11)


def test_version_is_stable_for_the_same_files_and_settings(tiny: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny, tmp_path / "copy")
    first = _version(tiny, DigestCache(tmp_path / "a.json"))
    assert (
        first
        == _version(tiny, DigestCache(tmp_path / "b.json"))
        == _version(copy, DigestCache(tmp_path / "c.json"))
    )
    (copy / "README.md").write_text("docs do not change vectors")
    assert _version(copy, DigestCache(tmp_path / "d.json")) == first
    for unrelated in ({"load": "lazy"}, {"idle_timeout": 5}, {"token_ids": "model"}, {"runtime": "torch"}):
        assert _version(tiny, DigestCache(tmp_path / "e.json"), **unrelated) == first, unrelated


def test_names_and_aliases_do_not_change_the_version(tiny: Path, tmp_path: Path) -> None:
    cache = DigestCache(tmp_path / "d.json")
    renamed = ModelEntry("another-name", str(tiny), aliases=("text-embedding-3-small", "m2")).to_spec()
    assert model_version(renamed, directory_fingerprint(renamed.directory, cache)) == _version(tiny, cache)


@pytest.mark.parametrize(
    "overrides",
    [
        {"pooling": "cls"},
        {"normalize": True},
        {"max_tokens": 64},
        {"overflow": "chunk"},
        {"prompts": {"query": "q: "}},
        {"dtype": "int8"},
    ],
    ids=lambda o: next(iter(o)),
)
def test_version_changes_with_every_vector_setting(tiny: Path, tmp_path: Path, overrides: dict) -> None:
    cache = DigestCache(tmp_path / "d.json")
    assert _version(tiny, cache, **overrides) != _version(tiny, cache)


@pytest.mark.parametrize("file", ["model.safetensors", "tokenizer.json", "1_Pooling/config.json"])
def test_version_changes_with_the_files(tiny: Path, tmp_path: Path, file: str) -> None:
    copy = shutil.copytree(tiny, tmp_path / "copy")
    before = _version(copy, DigestCache(tmp_path / "d.json"))
    with (copy / file).open("ab") as handle:
        handle.write(b" ")
    assert _version(copy, DigestCache(tmp_path / "d.json")) != before


# -- a server with two versions of one model ----------------------------------------------


@pytest.fixture(scope="module")
def versions(tmp_path_factory, model_dir):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("versions")
    return {
        "old": tiny_bert(root / "old", model_dir, seed=1),
        "new": tiny_bert(root / "new", model_dir, seed=2),
    }


def _catalog(old: Path, new: Path | None, current: str) -> str:
    text = f'[[models]]\nname = "m"\nsource = "{old}"\ncurrent = {str(current == "old").lower()}\n'
    if new is not None:
        text += f'\n[[models]]\nname = "m"\nsource = "{new}"\ncurrent = {str(current == "new").lower()}\n'
    return text


@pytest.fixture
def upgrade_server(data_dir, log_dir, versions, tmp_path):  # noqa: ANN001, ANN201
    config = tmp_path / "models.toml"
    config.write_text(_catalog(versions["old"], versions["new"], "old"))
    running = start_server(data_dir, log_dir, "--config", str(config), "--persistent-cache")
    running.config = config
    yield running
    running.stop()


def _embed(server, model: str, texts=TEXTS, **extra) -> httpx.Response:  # noqa: ANN001, ANN003
    headers = extra.pop("headers", None)
    body = {"model": model, "input": texts, "encoding_format": "base64", **extra}
    return httpx.post(f"{server.v1}/embeddings", json=body, headers=headers, timeout=60)


def _bits(response: httpx.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    return [base64.b64decode(d["embedding"]) for d in response.json()["data"]]


def _listed(server) -> dict:  # noqa: ANN001
    return httpx.get(f"{server.v1}/models/m").json()


def test_responses_name_the_version_and_models_list_both(upgrade_server) -> None:  # noqa: ANN001
    details = _listed(upgrade_server)
    assert [(v["current"], v["loaded"]) for v in details["versions"]] == [(True, True), (False, True)]
    current = details["version"]
    response = _embed(upgrade_server, "m")
    assert response.headers["x-model-version"] == response.json()["model_version"] == current
    assert len(current) == 12 and details["full_version"].startswith(current)


def test_pin_serves_exactly_that_version(upgrade_server) -> None:  # noqa: ANN001
    old, new = (v["version"] for v in _listed(upgrade_server)["versions"])
    full_new = _listed(upgrade_server)["versions"][1]["full_version"]
    assert _embed(upgrade_server, f"m@{new}").headers["x-model-version"] == new
    assert _embed(upgrade_server, f"m@{full_new}").headers["x-model-version"] == new
    assert _bits(_embed(upgrade_server, f"m@{old}")) == _bits(_embed(upgrade_server, "m"))
    assert _bits(_embed(upgrade_server, f"m@{new}")) != _bits(_embed(upgrade_server, "m"))
    missing = _embed(upgrade_server, "m@000000000000")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert old in missing.json()["error"]["message"] and new in missing.json()["error"]["message"]


def test_expected_version_guard_answers_409_with_how_to_pin(upgrade_server) -> None:  # noqa: ANN001
    old, new = (v["version"] for v in _listed(upgrade_server)["versions"])
    assert _embed(upgrade_server, "m", headers={"X-Expect-Model-Version": old}).status_code == 200
    for response in (
        _embed(upgrade_server, "m", headers={"X-Expect-Model-Version": new}),
        _embed(upgrade_server, "m", expect_version=new),
    ):
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "model_version_mismatch" and error["param"] == "model"
        assert old in error["message"] and f"m@{new}" in error["message"]


def test_cache_returns_the_same_bits_and_counts_savings_apart(upgrade_server) -> None:  # noqa: ANN001
    texts = [f"cache me {time.monotonic()}", "and me", f"cache me {time.monotonic()}"]
    texts[2] = texts[0]
    first = _embed(upgrade_server, "m", texts=texts)
    repeated_tokens = _embed(upgrade_server, "m", texts=texts[:1]).json()["usage"]["prompt_tokens"]
    assert first.json()["cache"] == {"cached_inputs": 1, "cached_tokens": repeated_tokens}  # the repeat
    second = _embed(upgrade_server, "m", texts=texts)
    assert _bits(first) == _bits(second) and _bits(first)[0] == _bits(first)[2]
    assert second.json()["cache"] == {
        "cached_inputs": 3,
        "cached_tokens": second.json()["usage"]["prompt_tokens"],
    }
    assert second.json()["usage"] == first.json()["usage"]  # usage counts tokens as OpenAI would
    other = _embed(upgrade_server, f"m@{_listed(upgrade_server)['versions'][1]['version']}", texts=texts)
    assert other.json()["cache"]["cached_inputs"] == 1  # never served across versions (only the repeat)
    assert _bits(other) != _bits(first)
    metrics = httpx.get(f"{upgrade_server.url}/metrics").text
    assert 'keepwarm_cache_lookups_total{result="hit"}' in metrics


def test_persistent_cache_survives_a_restart(data_dir, log_dir, versions, tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "models.toml"
    config.write_text(_catalog(versions["old"], None, "old"))
    texts = [f"persist {time.time()}", "across restarts"]
    server = start_server(data_dir, log_dir, "--config", str(config), "--persistent-cache")
    try:
        before = _bits(_embed(server, "m", texts=texts))
    finally:
        server.stop()
    server = start_server(data_dir, log_dir, "--config", str(config), "--persistent-cache")
    try:
        again = _embed(server, "m", texts=texts)
        assert again.json()["cache"]["cached_inputs"] == 2 and _bits(again) == before
    finally:
        server.stop()


def test_upgrade_by_reload_under_load_fails_no_request(upgrade_server, versions) -> None:  # noqa: ANN001
    server = upgrade_server
    old, new = (v["version"] for v in _listed(server)["versions"])
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            response = _embed(server, "m", texts=[f"load {n}", "steady"])
            if response.status_code != 200:
                failures.append(response.text)
            else:
                seen.add(response.headers["x-model-version"])

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        assert wait_for(lambda: old in seen, timeout=30)  # traffic is flowing on the old version
        server.config.write_text(_catalog(versions["old"], versions["new"], "new"))
        os.kill(server.process.pid, signal.SIGHUP)
        assert wait_for(lambda: _listed(server)["version"] == new)
        assert wait_for(lambda: new in seen)  # traffic has moved to the new version
        assert _embed(server, f"m@{old}").status_code == 200  # the old version stays servable by pin
        server.config.write_text(_catalog(versions["new"], None, "old"))  # drop the old version
        reloaded = httpx.post(f"{server.url}/admin/reload", timeout=120)
        assert reloaded.status_code == 200, reloaded.text
        assert _embed(server, f"m@{old}").status_code == 404
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not failures, failures[:3]
    assert seen == {old, new}


def test_a_bad_new_catalog_is_refused_and_the_old_keeps_serving(upgrade_server) -> None:  # noqa: ANN001
    upgrade_server.config.write_text('[[models]]\nname = "m"\nsource = "/nowhere"\n')
    refused = httpx.post(f"{upgrade_server.url}/admin/reload", timeout=60)
    assert refused.status_code == 400 and "old one keeps serving" in refused.json()["error"]["message"]
    assert _embed(upgrade_server, "m").status_code == 200


def test_models_diff_says_whether_reembedding_is_needed(versions, data_dir, tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "models.toml"
    config.write_text(_catalog(versions["old"], versions["new"], "old"))
    old, new = (_version(versions[v], DigestCache(tmp_path / "d.json"))[:12] for v in ("old", "new"))

    def diff(a: str, b: str) -> dict:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "keepwarm",
                "models",
                "diff",
                a,
                b,
                "--config",
                str(config),
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    different = diff(f"m@{old}", f"m@{new}")
    assert different["interchangeable"] is False and different["min_cosine"] < 0.9999
    assert "re-embed" in different["advice"]
    same = diff("m", f"m@{old}")
    assert same["interchangeable"] is True and same["min_cosine"] > 0.9999
