"""A real Ray cluster of several nodes on this machine, started and torn down by the tests.

Each node is a `ray start --block` process in a session of its own, so tearing the
cluster down is stopping those process groups (every Ray daemon and worker of a node
lives in its node's group), even when the test failed. Logical CPUs, a small object
store and no dashboard keep it light on a shared machine; every port is chosen free, so
two nodes (and other clusters) can share the machine.

The cluster uses token authentication with a token of its own, as Ray recommends for any
cluster: the nodes and every process started while it runs (keepwarm, the helpers' scripts)
get it through the environment. An explicit mode also keeps the cluster independent of
`~/.ray/auth_token`, which a local `ray.init()` leaves behind and which `ray start` would
otherwise turn into token authentication for every later cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
# Serve's own view of its applications (serve.status()), as JSON: status, and replica states per deployment
_SERVE_STATUS = """
import dataclasses, json, sys
import ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps(dataclasses.asdict(serve.status())["applications"], default=str))
"""
NODE_START_TIMEOUT = 120.0
OBJECT_STORE_BYTES = 80 * 1024 * 1024


@dataclass
class RayCluster:
    """The head's address and each node's `ray start` process."""

    address: str
    temp_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def shut_down_serve(self) -> None:
        """Remove every Serve application (an ingress leaves them running for other ingresses)."""
        script = f"import ray; from ray import serve; ray.init(address={self.address!r}); serve.shutdown()"
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)

    def serve_status(self) -> dict[str, Any]:
        """Serve's status of every application: `{app: {status, deployments: {name: {replica_states, …}}}}`.

        States read as `serve status` prints them (`"RUNNING"`, `"STARTING"`).
        """
        result = subprocess.run(
            [sys.executable, "-c", _SERVE_STATUS, self.address], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"serve.status() failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout)

    def replica_states(self, app_prefix: str) -> Counter[str]:
        """How many replicas the application named `app_prefix…` has in each state, by Serve's count."""
        states: Counter[str] = Counter()
        for name, app in self.serve_status().items():
            if name.startswith(app_prefix):
                for deployment in app["deployments"].values():
                    states.update(deployment["replica_states"])
        return states

    def serve_controller_log(self, lines: int = 40) -> str:
        """The last lines of the Serve controller's log (why replicas start, stop or wait)."""
        logs = sorted(self.temp_dir.glob("session_*/logs/serve/controller_*.log"))
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else "(no log)"

    def replica_pids(self, app: str) -> list[int]:
        """Processes of the Serve replicas of application `app` (Ray names each replica's process)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    command = (entry / "cmdline").read_bytes().decode(errors="replace")
                    if "ServeReplica" in command and app in command:
                        pids.append(int(entry.name))
        return sorted(pids)


def _node_ports() -> list[str]:
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    return [f"{option}={port}" for option, port in ports.items()]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the Ray head did not listen on {port} within {NODE_START_TIMEOUT:.0f}s")


def _start_node(arguments: list[str], log: Path) -> subprocess.Popen:
    command = [RAY, "start", "--block", "--disable-usage-stats", *arguments, *_node_ports()]
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(nodes: list[subprocess.Popen]) -> None:
    """SIGTERM every node's process group at once; SIGKILL what is left after a grace time."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for node in nodes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, sig)
        deadline = time.monotonic() + grace
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=max(0.1, deadline - time.monotonic()))
        if all(node.poll() is not None for node in nodes):
            return


@contextlib.contextmanager
def ray_cluster(nodes: int = 2, cpus: int = 1) -> Iterator[RayCluster]:
    """A head and `nodes - 1` more nodes of `cpus` logical CPUs; stopped on the way out, whatever happens."""
    temp_dir = Path(tempfile.mkdtemp(prefix="kwray", dir="/tmp"))  # short: Ray's socket paths have a limit
    port = free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", temp_dir)
    common = [
        f"--num-cpus={cpus}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--node-ip-address=127.0.0.1",
    ]
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    with pytest.MonkeyPatch.context() as environment:  # put back as it was on the way out
        environment.delenv("RAY_AUTH_TOKEN", raising=False)  # it would win over the file
        environment.setenv("RAY_AUTH_MODE", "token")
        environment.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        try:
            head_log = temp_dir / "head.log"
            head = [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--temp-dir={temp_dir}",
            ]
            cluster.nodes.append(_start_node([*head, *common], head_log))
            _wait_for_port(port, cluster.nodes[0], head_log)
            # every node of this machine shares one log folder: one log monitor forwards it to drivers
            # (each node's own would send every line once per node)
            joining = [f"--address={cluster.address}", "--include-log-monitor=false", *common]
            for n in range(1, nodes):
                cluster.nodes.append(_start_node(joining, temp_dir / f"node{n}.log"))
            yield cluster
        finally:
            _stop(cluster.nodes)
            shutil.rmtree(temp_dir, ignore_errors=True)
