"""Real `keepwarm serve` processes on loopback for the tests, and waiting on their state."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from keepwarm.bench.process import ServerProcess, free_port
from keepwarm.engine.worker import HOLD_FILE_ENV

# A server that builds many artifacts at its first start (tests/test_catalog_serving.py: nine
# models, one quantized) took over 300 s on a slow 2-core AVX2 host while the other worker
# ran; just under pytest's per-test limit (pyproject.toml), which covers fixture setup too.
READY_TIMEOUT = 540.0
_HOLD_FILES = itertools.count()  # one hold file per server, in the session's log folder

__all__ = ["RunningServer", "free_port", "metric", "start_server", "state_dir", "wait_for", "wait_ready"]


class RunningServer:
    """A `keepwarm serve` subprocess and how to reach it: the product's ServerProcess, as tests use it."""

    def __init__(self, server: ServerProcess, hold_file: Path | None = None) -> None:
        self.server = server
        self.hold_file = hold_file

    @property
    def process(self) -> subprocess.Popen:
        return self.server.process

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def logs(self) -> str:
        return self.server.log_text()

    def stop(self) -> int | None:
        return self.server.stop()

    @contextlib.contextmanager
    def holding(self, *models: str) -> Iterator[None]:
        """Model calls wait while this is active: queued work stays queued, deterministically.

        With model names, only those models' workers wait; the others keep running.
        """
        assert self.hold_file is not None, "start the server with holdable=True"
        self.hold_file.write_text("".join(f"{model}\n" for model in models))
        try:
            yield
        finally:
            self.hold_file.unlink(missing_ok=True)


def start_server(
    data_dir: Path,
    log_dir: Path,
    *args: str,
    wait: bool = True,
    holdable: bool = False,
    database: str | None = None,
) -> RunningServer:
    """Start `keepwarm serve` on a free loopback port; wait until /ready says 200.

    `holdable` servers pause their model workers while `server.holding()` is active.
    With `database` (a URL), the server keeps its state there (`--database`).
    """
    if database:
        args = ("--database", database, *args)
    hold_file = log_dir / f"hold-{next(_HOLD_FILES)}" if holdable else None
    env = {HOLD_FILE_ENV: str(hold_file)} if hold_file else {}
    server = ServerProcess(data_dir, args, env=env, log_dir=log_dir, ready_timeout=READY_TIMEOUT)
    server.start(wait=wait)
    return RunningServer(server, hold_file)


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


def metric(server: RunningServer, name: str, model: str | None = None) -> float:
    """The sum of a metric's series on the server's /metrics page; with `model`, of its versions only."""
    text = httpx.get(f"{server.url}/metrics").text
    labels = rf'{{[^}}]*model="{re.escape(model)}(?:@[^"]*)?"[^}}]*}}' if model else r"(?:{[^}]*})?"
    return sum(float(v) for v in re.findall(rf"^{name}{labels} (\S+)$", text, re.M))


def wait_for(predicate, timeout: float = 60, interval: float = 0.01) -> bool:  # noqa: ANN001
    """Poll `predicate` every `interval` seconds until true or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(interval)
    return predicate()


def wait_ready(server: RunningServer) -> None:
    """Wait until a server started with `wait=False` is ready (ServerFailed, with its log, if it dies)."""
    server.server.wait_ready()
