"""The mypyc-compiled build (setup.py) passes the whole suite: a copy of the checkout compiled in place."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(".git", "__pycache__", "*.so", "build", "*.egg-info", ".venv*", ".build-*")


@pytest.mark.timeout(900)
def test_the_suite_passes_on_the_compiled_build(tmp_path: Path) -> None:
    copy = tmp_path / "sluicegate"
    shutil.copytree(REPO, copy, ignore=LEFT_OUT)
    env = {**os.environ, "SLUICEGATE_COMPILE": "1", "PYTHONPATH": str(copy / "src")}
    version = [sys.executable, "-m", "sluicegate", "version"]
    before = subprocess.run(version, env=env, capture_output=True, text=True).stdout
    # built as `pip install .` builds it (its own setuptools and mypy), then put beside the copy's .py files
    target = tmp_path / "installed"
    build = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(copy)]
    built = subprocess.run(build, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    for library in target.rglob("*.so"):
        shutil.copy(library, copy / "src" / library.relative_to(target))
    after = subprocess.run(version, env=env, capture_output=True, text=True).stdout
    assert before.endswith("(pure Python)\n") and after.endswith("(mypyc-compiled)\n"), (before, after)

    suite = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    suite += ["--ignore", "tests/test_compiled_build.py"]  # this test
    ran = subprocess.run(suite, cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    summary = ran.stdout.strip().splitlines()[-1] if ran.stdout.strip() else ""
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
