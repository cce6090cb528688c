"""`llm-limits` on an install without the cli extra: one line saying what to install, exit 2.

Each case runs the installed console script (or ``python -m llm_limits.cli``) in a real
subprocess whose ``sitecustomize`` makes the extra's modules unimportable, as on a thin
``pip install llm-limits``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HINT = "llm-limits needs the cli extra: pip install 'llm-limits[cli]'"
SCRIPT = Path(sys.executable).parent / "llm-limits"


def run_without(tmp_path: Path, blocked: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``blocked`` modules unimportable (None in sys.modules)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    for var in ("LLM_LIMITS_DB_URL", "SUPABASE_DB_URL", "DATABASE_URL"):
        env.pop(var, None)
    return subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("blocked", [["typer"], ["rich"], ["typer", "rich", "matplotlib"]])
def test_the_console_script_names_the_extra(tmp_path: Path, blocked: list[str]) -> None:
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: pip install -e '.[dev]'"

    done = run_without(tmp_path, blocked, str(SCRIPT), "status")

    assert (done.returncode, done.stderr, done.stdout) == (2, HINT + "\n", "")


def test_python_m_names_the_extra(tmp_path: Path) -> None:
    done = run_without(tmp_path, ["typer"], sys.executable, "-m", "llm_limits.cli", "--help")

    assert (done.returncode, done.stderr, done.stdout) == (2, HINT + "\n", "")


def test_a_chart_command_names_the_extra_before_it_runs(tmp_path: Path) -> None:
    # typer and rich are there; simulate's chart needs matplotlib, and says so before it
    # reaches for a database (none is given: the local stack's would not answer here).
    done = run_without(
        tmp_path, ["matplotlib"], str(SCRIPT), "simulate", "--duration", "1",
        "--db-url", "postgresql://nobody@127.0.0.1:9/none",
    )  # fmt: skip

    assert (done.returncode, done.stderr.strip().splitlines()) == (2, [HINT])


def test_a_module_outside_the_extra_is_not_blamed_on_it(tmp_path: Path) -> None:
    done = run_without(tmp_path, ["psycopg"], str(SCRIPT), "status")

    assert done.returncode == 1
    assert HINT not in done.stderr
    assert "ModuleNotFoundError" in done.stderr and "psycopg" in done.stderr
