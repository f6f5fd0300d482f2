"""Schemathesis against the server's own OpenAPI document: whatever it sends, no 5xx comes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import create_key

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_no_generated_request_gets_a_server_error(keyed_server) -> None:  # noqa: ANN001
    # an admin key, so admin routes are exercised too; a bounded example count keeps this well under a minute.
    # One worker: hypothesis describes filters by parsing their source with ast.parse, which is not
    # thread-safe on CPython 3.11 (two workers crashed schemathesis itself: "AST constructor recursion
    # depth mismatch").
    key = create_key(keyed_server.data_dir, "fuzzer", "--admin")
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{keyed_server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--request-timeout",
            "60",
            "--header",
            f"Authorization: Bearer {key}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "generated" in result.stdout and "passed" in result.stdout
