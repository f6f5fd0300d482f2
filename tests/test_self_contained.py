"""The repository stands on its own: a copy with nothing beside it collects the whole suite.

The copy holds what `git` would commit now (tracked and new, not ignored, files), so a
change that reaches outside the repository fails here before it is committed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

CHECKED = ("src", "tests", "scripts", "Makefile", ".ci")


def _beside_the_repository() -> list[str]:
    """How a file would name each folder beside this checkout: relative to it, and absolute."""
    beside = [p for p in ROOT.parent.iterdir() if p.is_dir() and p != ROOT]
    return [f"..{os.sep}{p.name}" for p in beside] + [str(p) for p in beside]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree as it would be committed, alone in an empty folder."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    target = tmp_path_factory.mktemp("alone") / "keepwarm"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_a_copy_with_nothing_beside_it_collects_every_test(copy: Path) -> None:
    assert sorted(p.name for p in copy.parent.iterdir()) == ["keepwarm"]
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    imported = subprocess.run(
        [sys.executable, "-c", "import keepwarm; print(keepwarm.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(imported.strip()).is_relative_to(copy)  # the copy's code, not an installed one
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = re.search(r"^(\d+) tests? collected", result.stdout, re.M)
    assert collected and int(collected.group(1)) > 0, result.stdout[-3000:]
    assert "error" not in result.stdout.splitlines()[-1].lower()


def test_nothing_refers_to_files_beside_the_repository(copy: Path) -> None:
    files = [
        p
        for name in CHECKED
        for p in ([copy / name] if (copy / name).is_file() else (copy / name).rglob("*"))
    ]
    offenders = [
        f"{path.relative_to(copy)}: {needle}"
        for path in files
        if path.is_file()
        for needle in _beside_the_repository()
        if needle in path.read_text(errors="replace")
    ]
    assert not offenders, offenders
