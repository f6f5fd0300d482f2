"""What the tests share besides fixtures: server processes, the CLI, vectors, tiny models, texts.

Tests import from here (`from helpers import start_server`), never from conftest.
"""

from __future__ import annotations

from pathlib import Path

from helpers.cli import create_key, keepwarm
from helpers.server import RunningServer, free_port, metric, start_server, state_dir, wait_for, wait_ready
from helpers.vectors import assert_same_vectors, cosines

ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-minilm-l6-v2"

__all__ = [
    "MODEL",
    "ROOT",
    "RunningServer",
    "assert_same_vectors",
    "cosines",
    "create_key",
    "free_port",
    "keepwarm",
    "metric",
    "start_server",
    "state_dir",
    "wait_for",
    "wait_ready",
]
