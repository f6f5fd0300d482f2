"""A `keepwarm serve` subprocess that the benchmark starts, watches and stops.

It listens on a free loopback port and inherits the benchmark's CPU affinity, so the
server and the in-process baselines run on the same cores. On Linux its CPU time and
resident memory are read from /proc, which shows whether the server (not the load
generator) was what kept the cores busy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ServerFailed(RuntimeError):
    """The server exited or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One `keepwarm serve` run on 127.0.0.1; use as a context manager."""

    def __init__(self, data_dir: Path, args: tuple[str, ...] = (), ready_timeout: float = 600.0) -> None:
        self.data_dir = data_dir
        self.args = args
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="keepwarm-bench-server-", suffix=".log", delete=False)
        self.process: subprocess.Popen | None = None
        self.ready_seconds = 0.0

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until `/ready` answers 200; `ready_seconds` is how long that took."""
        command = [
            sys.executable,
            "-m",
            "keepwarm",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        self._wait_ready()
        self.ready_seconds = time.perf_counter() - started

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        Path(self._log.name).unlink(missing_ok=True)

    @property
    def exported(self) -> bool:
        """True when this start had to build an artifact (export, quantization, a measured choice)."""
        return "building artifact" in self.log_text()

    def log_text(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux), else None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, AttributeError):
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def memory_mb(self) -> dict[str, float] | None:
        """Resident memory now and at its peak, in MB (Linux), else None."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except (OSError, AttributeError):
            return None
        values = {
            line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")
        }
        return {
            "rss_mb": round(values.get("VmRSS", 0) / 1024, 1),
            "peak_rss_mb": round(values.get("VmHWM", 0) / 1024, 1),
        }

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"keepwarm serve exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2):
                    return  # 200; 503 (still loading) raises HTTPError
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerFailed(f"keepwarm serve was not ready after {self.ready_timeout:.0f}s")
