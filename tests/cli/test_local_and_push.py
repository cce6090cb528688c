"""`llm-limits local` (embedded Postgres) and `llm-limits db push` (supabase db push)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from llm_limits.cli import localstack
from tests.cli.conftest import Invoke
from tests.conftest import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = len(list((REPO / "supabase" / "migrations").glob("*.sql")))
URL_VARS = {"LLM_LIMITS_DB_URL": None, "SUPABASE_DB_URL": None, "DATABASE_URL": None}


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: the server runs as `postgres`, which must reach the directory.
    path = Path(tempfile.mkdtemp(prefix="llt-cli-local-"))
    os.chmod(path, 0o755)
    yield path
    localstack.down(path / ".llm-limits" / "pg", remove=True)
    shutil.rmtree(path, ignore_errors=True)


def test_local_up_is_idempotent_and_is_the_default_database(
    cli_bare: Invoke, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)  # the default --dir is ./.llm-limits/pg
    first = cli_bare("local", "up", "--project", str(REPO))
    assert first.exit_code == 0, first.output
    url = first.stdout.strip()
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    second = cli_bare("local", "up", "--project", str(REPO))
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == url
    assert "already running" in second.stderr and "up to date" in second.stderr
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from supabase_migrations.schema_migrations")
        assert row.fetchone() == (MIGRATIONS,)

    assert cli_bare("local", "url").stdout.strip() == url
    status = cli_bare("local", "status")
    assert status.exit_code == 0 and f"{MIGRATIONS} applied" in status.stdout

    # With no URL in the environment, every command falls back to the running local stack.
    listed = cli_bare("models", "list", env=URL_VARS)
    assert listed.exit_code == 0, listed.output
    assert "gemma-3-27b" in listed.stdout

    down = cli_bare("local", "down", "--remove")
    assert down.exit_code == 0, down.output
    assert cli_bare("local", "status").exit_code == 3
    assert not (workdir / ".llm-limits" / "pg").exists()


def test_db_push_deploys_and_is_then_a_no_op(cli_bare: Invoke) -> None:
    url = create_database(template=None, prefix="push")
    try:
        localstack.bootstrap(url)
        first = cli_bare("db", "push", "--db-url", url, "--project", str(REPO))
        assert first.exit_code == 0, first.output
        assert first.stdout.startswith(f"applied {MIGRATIONS} migrations")
        again = cli_bare("db", "push", "--db-url", url, "--project", str(REPO))
        assert again.exit_code == 0, again.output
        assert "already up to date" in again.stdout
    finally:
        drop_database(url)
