"""Drift adapters: fit new → old on a sample, save them, and measure retrieval retention."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.texts import write_corpus

from keepwarm.adapter import LinearAdapter, fit


def _keepwarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keepwarm", *args], capture_output=True, text=True, timeout=600
    )


def test_procrustes_recovers_a_rotation_exactly() -> None:
    rng = np.random.default_rng(0)
    old = rng.standard_normal((200, 16))
    rotation = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    new = old @ rotation  # the new version is the old space, rotated
    adapter = fit(new, old, "procrustes", {})
    np.testing.assert_allclose(new @ adapter.weight, old, atol=1e-4)


def test_least_squares_recovers_a_general_linear_map() -> None:
    rng = np.random.default_rng(1)
    old = rng.standard_normal((300, 8))
    new = old @ rng.standard_normal((8, 8))
    np.testing.assert_allclose(new @ fit(new, old, "lstsq", {}).weight, old, atol=1e-3)


def test_perturbed_copies_are_deterministic(tiny_dir, tmp_path) -> None:  # noqa: ANN001
    for name in ("a", "b"):
        assert (
            _keepwarm("adapter", "perturb", str(tiny_dir), str(tmp_path / name), "--seed", "7").returncode
            == 0
        )
    digest = lambda name: hashlib.sha256((tmp_path / name / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    original = hashlib.sha256((tiny_dir / "model.safetensors").read_bytes()).hexdigest()
    assert digest("a") == digest("b") != original


@pytest.fixture(scope="module")
def perturbed_tiny(tiny_dir, tmp_path_factory) -> Path:  # noqa: ANN001
    target = tmp_path_factory.mktemp("perturbed") / "tiny-v2"
    assert _keepwarm("adapter", "perturb", str(tiny_dir), str(target), "--scale", "0.5").returncode == 0
    return target


def test_adapter_fit_saves_the_map_and_reports_retention(
    tiny_dir, perturbed_tiny, tmp_path, data_dir
) -> None:  # noqa: ANN001
    output = tmp_path / "v2-to-v1.safetensors"
    result = _keepwarm(
        "adapter",
        "fit",
        "--old",
        "v1",
        "--new",
        "v2",
        "--add-model",
        f"v1={tiny_dir}",
        "--add-model",
        f"v2={perturbed_tiny}",
        "--corpus",
        str(write_corpus(tmp_path / "corpus.jsonl")),
        "--fit-texts",
        "300",
        "--heldout-texts",
        "200",
        "--output",
        str(output),
        "--data-dir",
        str(data_dir),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    adapter = LinearAdapter.load(output)
    assert adapter.weight.shape == (32, 32)
    assert adapter.metadata["old_version"] == report["old_version"] != report["new_version"]
    assert json.loads(adapter.metadata["retention"])["retention"] == report["retention"]
    assert report["queries"] > 100
    assert report["mean_cosine_adapted_to_old"] > report["mean_cosine_new_to_old"]  # held-out texts
    assert 0 < report["retention"] <= 1.2
    vectors = adapter.adapt(np.random.default_rng(0).standard_normal((4, 32)))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
