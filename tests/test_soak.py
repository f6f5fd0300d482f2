"""The soak script in its short form: mixed traffic against a real server; no 5xx, no lost usage, flat RSS."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT, state_dir


def test_short_soak_has_no_5xx_no_lost_usage_and_flat_memory(server, data_dir, tmp_path) -> None:  # noqa: ANN001
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--seconds",
            "15",
            "--warm-up-answers",
            "120",
            "--clients",
            "4",
            "--data-dir",
            str(state_dir(data_dir, tmp_path / "data")),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert all(report["checks"].values())
    scenarios = {key.split()[0] for key in report["statuses"]}
    assert scenarios == {"valid", "invalid", "oversized", "limited", "hang_up"}, report["statuses"]
