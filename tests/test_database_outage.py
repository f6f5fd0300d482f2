"""The database going away under load: 503 with Retry-After, never a 500 or a hang, and recovery.

The PostgreSQL server here is a throwaway cluster of the test's own (helpers.postgres),
stopped at once (`pg_ctl -m immediate`, as a crash would) while clients keep sending,
then started again; the replica must come back by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import MODEL, RunningServer, keepwarm, start_server, state_dir, wait_for
from helpers.postgres import ThrowawayPostgres

CLIENTS = 4
REQUEST_TIMEOUT = 30.0  # far above what any answer may take: reaching it is a hang


@pytest.fixture(scope="module")
def database() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="module")
def replica(
    server, data_dir: Path, log_dir: Path, database: ThrowawayPostgres, tmp_path_factory
) -> Iterator[tuple[RunningServer, str]]:  # noqa: ANN001
    secret = keepwarm(
        "keys", "create", "--name", "load", "--rpm", "100000", "--database", database.url
    ).stdout
    running = start_server(
        state_dir(data_dir, tmp_path_factory.mktemp("outage") / "data"), log_dir, database=database.url
    )
    yield running, secret.strip()
    running.stop()


class _Load:
    """Clients sending embeddings in a loop, keeping every answer's status, headers and body."""

    def __init__(self, server: RunningServer, secret: str) -> None:
        self.server = server
        self.secret = secret
        self.answers: list[tuple[float, httpx.Response]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def statuses_since(self, moment: float) -> set[int]:
        return {response.status_code for at, response in list(self.answers) if at >= moment}

    def _client(self) -> None:
        headers = {"Authorization": f"Bearer {self.secret}"}
        with httpx.Client(timeout=REQUEST_TIMEOUT) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(
                        f"{self.server.v1}/embeddings",
                        json={"model": MODEL, "input": "steady"},
                        headers=headers,
                    )
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    continue
                self.answers.append((time.monotonic(), response))


def test_requests_get_503_with_retry_after_while_the_database_is_down_and_the_service_recovers(
    replica: tuple[RunningServer, str], database: ThrowawayPostgres
) -> None:
    server, secret = replica
    with _Load(server, secret) as load:
        assert wait_for(lambda: 200 in load.statuses_since(0), timeout=60)
        database.stop()
        down = time.monotonic()
        assert wait_for(lambda: 503 in load.statuses_since(down), timeout=REQUEST_TIMEOUT)
        database.start()
        up = time.monotonic()
        assert wait_for(lambda: 200 in load.statuses_since(up + 0.5), timeout=REQUEST_TIMEOUT)
    assert not load.failures and {r.status_code for _, r in load.answers} == {200, 503}
    for _, response in load.answers:
        if response.status_code == 503:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
            assert int(response.headers["retry-after"]) >= 1
    assert "Traceback" not in server.logs()
