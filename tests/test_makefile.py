"""The Makefile's promises to a new user: ``make demo`` keeps a previous demo unless asked, and the torch
step falls back to pip's usual index quickly when the CPU wheel index cannot be reached.

The recipes run against a stand-in virtual environment whose ``aexp`` and ``python`` only log their
arguments, so nothing is installed and no experiment runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _logging_script(path: Path, log: Path, body: str = "") -> None:
    path.write_text(f'#!/bin/sh\necho "$(basename $0) $*" >> {log}\n{body}')
    path.chmod(0o755)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the Makefile beside a stand-in .venv that is newer than pyproject.toml."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    log = tmp_path / "calls.log"
    _logging_script(bin_ / "aexp", log)
    later = time.time() + 10
    os.utime(bin_ / "aexp", (later, later))
    return tmp_path, log


def _make(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_demo_runs_into_runs_demo(project):
    cwd, log = project
    assert _make(cwd, "demo", "STEPS=3").returncode == 0
    assert log.read_text().split() == ["aexp", "run", "configs/plasmonic-dkl.yaml", "--out", "runs/demo",
                                       "--seed", "0", "--overwrite", "--steps", "3"]


def test_demo_keeps_a_previous_demo_unless_overwrite_is_given(project):
    cwd, log = project
    (cwd / "runs" / "demo").mkdir(parents=True)
    refused = _make(cwd, "demo")
    assert refused.returncode != 0
    assert "OVERWRITE=1" in refused.stdout + refused.stderr
    assert not log.exists()  # aexp never ran
    assert (cwd / "runs" / "demo").is_dir()
    assert _make(cwd, "demo", "OVERWRITE=1").returncode == 0
    assert log.read_text().startswith("aexp run configs/plasmonic-dkl.yaml --out runs/demo")


def test_torch_step_falls_back_quickly_when_the_index_is_unreachable(tmp_path):
    """A fresh setup whose TORCH_INDEX does not answer installs the pinned torch from pip's usual index."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    log = tmp_path / "calls.log"
    # a stand-in for `python3 -m venv VENV`: makes VENV/bin/python, which runs the reachability probe with
    # the real interpreter and logs every pip call
    fake_python = tmp_path / "python3"
    fake_python.write_text(
        f'#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin"; '
        f'cp "$0" "$3/bin/python"; exit 0; fi\n'
        f'if [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'
        f'echo "python $*" >> {log}\n'
    )
    fake_python.chmod(0o755)
    # a port nobody listens on: refused at once, the way an unreachable index fails offline
    unreachable = "http://127.0.0.1:9/whl/cpu"
    start = time.monotonic()
    done = _make(tmp_path, "setup", f"PYTHON={fake_python}", f"TORCH_INDEX={unreachable}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - start < 30
    assert "not reachable" in done.stdout
    assert log.read_text().splitlines() == ["python -m pip install torch==2.13.0",
                                            "python -m pip install -e .[dev]"]


def test_torch_spec_empty_installs_no_torch(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    dry = _make(tmp_path, "-n", "setup", "TORCH_SPEC=")
    assert "torch" not in dry.stdout.replace("TORCH", "")
    dry = _make(tmp_path, "-n", "setup")
    assert "--index-url 'https://download.pytorch.org/whl/cpu' 'torch==2.13.0'" in dry.stdout
