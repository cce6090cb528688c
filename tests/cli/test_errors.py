"""Failures an operator can fix are one line on stderr with exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import Invoke

URL_VARS = ("LLM_LIMITS_DB_URL", "SUPABASE_DB_URL", "DATABASE_URL")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARS}
    return subprocess.run(
        [sys.executable, "-m", "llm_limits.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_unreachable_database_is_one_line_and_exit_2() -> None:
    proc = run_cli("status", "--db-url", "postgresql://postgres:hunter2@127.0.0.1:1/nowhere")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot connect to postgresql://postgres:***@127.0.0.1:1/")
    assert "hunter2" not in proc.stderr


def test_malformed_database_url_is_one_line_and_exit_2() -> None:
    proc = run_cli("keys", "list", "--db-url", "this is not a url")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_database_configured(tmp_path: Path) -> None:
    proc = run_cli("status", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no database" in proc.stderr and "llm-limits local up" in proc.stderr


def test_unknown_model_on_generate_exits_2(cli: Invoke) -> None:
    result = cli("generate", "gemma-9-typo", "hello")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: unknown model 'gemma-9-typo' (known: gemini-2.5-flash, gemma-3-12b, gemma-3-27b)"
    )


def test_importing_the_client_does_not_load_the_cli_dependencies() -> None:
    # Nor the batch runner's bar (tqdm, loaded when a bar is shown) or pandas (never).
    code = (
        "import llm_limits, sys; "
        "loaded = [m for m in ('typer', 'rich', 'matplotlib', 'llm_limits.cli.app', 'tqdm', "
        "'pandas') "
        "if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
