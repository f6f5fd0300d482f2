"""A `keepwarm serve` subprocess on a free loopback port: the one harness that starts, watches and stops it.

`keepwarm bench`, `keepwarm bench-batches`, scripts/soak.py and the test suite all drive
real servers through this class, so port picking, readiness, failure reports and shutdown
behave the same everywhere. The server inherits the caller's CPU affinity (a benchmark's
server and its in-process baselines share the same cores); on Linux its CPU time and
resident memory are read from /proc, which shows whether the server, not the load
generator, kept the cores busy.
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
from collections.abc import Mapping
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_POLL_SECONDS = 0.05
_LOG_TAIL = 3000


class ServerFailed(RuntimeError):
    """The server exited or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One `keepwarm serve` run on 127.0.0.1; use as a context manager or start()/stop().

    `log_dir` keeps the server's output in `server-<port>.log` there (it outlives the
    process); without one the output goes to a temporary file removed by stop(). `env`
    adds to this process's environment.
    """

    def __init__(
        self,
        data_dir: Path,
        args: tuple[str, ...] = (),
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        ready_timeout: float = 600.0,
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_log = log_dir is None
        if log_dir is None:
            with tempfile.NamedTemporaryFile(prefix="keepwarm-server-", suffix=".log", delete=False) as log:
                self.log_path = Path(log.name)
        else:
            self.log_path = log_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.ready_seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, wait: bool = True) -> None:
        """Start the server; with `wait`, return once `/ready` answers 200 (see wait_ready)."""
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
        self._started = time.perf_counter()
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Poll `/ready` until 200; `ready_seconds` is the time from start to then.

        Raises ServerFailed with the log's tail if the process exits first, or (after
        stopping it) if it is not ready within `ready_timeout`.
        """
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"keepwarm serve exited with {self.process.returncode}:\n{self.log_text()[-_LOG_TAIL:]}"
                )
            if self._answers_ready():
                self.ready_seconds = time.perf_counter() - self._started
                return
            time.sleep(_POLL_SECONDS)
        log = self.log_text()[-_LOG_TAIL:]
        self.stop()
        raise ServerFailed(f"keepwarm serve was not ready after {self.ready_timeout:.0f}s:\n{log}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    @property
    def exported(self) -> bool:
        """True when this start had to build an artifact (export, quantization, a measured choice)."""
        return "building artifact" in self.log_text()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

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

    def _answers_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=2):
                return True  # 200; 503 (still loading) raises HTTPError
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
