"""The `keepwarm` command line, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def keepwarm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `keepwarm` command line, as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "keepwarm", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"keepwarm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def create_key(data_dir: Path, name: str, *options: str) -> str:
    """A new API key's secret, made with `keepwarm keys create`."""
    return keepwarm("keys", "create", "--name", name, *options, "--data-dir", str(data_dir)).stdout.strip()
