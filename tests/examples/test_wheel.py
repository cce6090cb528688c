"""The install a Kaggle notebook uses without PyPI: `make wheel` builds the client's wheel, and a
fresh virtual environment installs it as the README's one line does (`pip install` of the
file; its dependencies come from the package index), then runs the Kaggle notebook with it.
The operator CLI is an extra: without it `llm-limits` says what to install, with it it runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llm_limits.cli import INSTALL_HINT

from .conftest import ROOT, RunExample


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_notebook(
    run_example: RunExample, tmp_path: Path
) -> None:
    built = run("make", "--no-print-directory", "wheel", f"DIST={tmp_path / 'dist'}")
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("llm_limits-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    installed = run(venv / "bin" / "pip", "install", "--quiet", wheel)
    assert installed.returncode == 0, installed.stderr[-3000:]

    notebook = run_example("kaggle_notebook.py", python=str(venv / "bin" / "python"))
    assert notebook.committed("kaggle-notebook") == 11
    where = run(venv / "bin" / "python", "-c", "import llm_limits; print(llm_limits.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    bare = run(venv / "bin" / "llm-limits", "--help")
    assert (bare.returncode, bare.stderr.strip()) == (2, INSTALL_HINT)
    with_cli = run(venv / "bin" / "pip", "install", "--quiet", f"{wheel}[cli]")
    assert with_cli.returncode == 0, with_cli.stderr[-3000:]
    helped = run(venv / "bin" / "llm-limits", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "callers" in helped.stdout and "report" in helped.stdout
