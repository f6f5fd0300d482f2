"""Real `keepwarm serve` processes on loopback for the tests, and waiting on their state."""

from __future__ import annotations

import contextlib
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

from keepwarm.engine.worker import HOLD_FILE_ENV

READY_TIMEOUT = 300.0


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
    hold_file: Path | None = None

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Model calls wait while this is active: queued work stays queued, deterministically."""
        assert self.hold_file is not None, "start the server with holdable=True"
        self.hold_file.touch()
        try:
            yield
        finally:
            self.hold_file.unlink(missing_ok=True)

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


def start_server(
    data_dir: Path, log_dir: Path, *args: str, wait: bool = True, holdable: bool = False
) -> RunningServer:
    """Start `keepwarm serve` on a free loopback port; wait until /ready says 200.

    `holdable` servers pause their model workers while `server.holding()` is active.
    """
    port = free_port()
    log = log_dir / f"server-{port}.log"
    hold_file = log_dir / f"hold-{port}" if holdable else None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if hold_file is not None:
        env[HOLD_FILE_ENV] = str(hold_file)
    process = subprocess.Popen(
        [sys.executable, "-m", "keepwarm", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log, data_dir, hold_file)
    if wait:
        wait_ready(server)
    return server


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
