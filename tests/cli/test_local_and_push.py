"""`llm-limits local` (embedded Postgres) and `llm-limits db push` (supabase db push)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from llm_limits.local import localstack
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


@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the server runs as that user")
def test_local_up_from_a_directory_postgres_cannot_enter(
    cli_bare: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout in a 0700 directory of root's, as when root clones into its home.
    private = Path(tempfile.mkdtemp(prefix="llt-private-"))
    os.chmod(private, 0o700)
    home = Path(tempfile.mkdtemp(prefix="llt-pg-home-"))
    os.chmod(home, 0o755)
    monkeypatch.setattr(localstack, "PG_HOME", home / "clusters")
    checkout = private / "llm-limits"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    stack = checkout / ".llm-limits" / "pg"
    try:
        up = cli_bare("local", "up", "--project", str(REPO))
        assert up.exit_code == 0, up.output
        with psycopg.connect(up.stdout.strip()) as conn:
            row = conn.execute("select count(*) from supabase_migrations.schema_migrations")
            assert row.fetchone() == (MIGRATIONS,)
        # The checkout was not loosened; the cluster lives where postgres can reach it.
        assert private.stat().st_mode & 0o777 == 0o700
        assert stack.is_symlink() and stack.resolve().parent == home / "clusters"
        assert stack.resolve().stat().st_mode & 0o777 == 0o700
        assert cli_bare("local", "status").exit_code == 0
        again = cli_bare("local", "up", "--project", str(REPO))
        assert again.exit_code == 0 and again.stdout == up.stdout

        assert cli_bare("local", "down", "--remove").exit_code == 0
        assert not stack.exists() and not stack.is_symlink()
        assert list((home / "clusters").iterdir()) == []
    finally:
        localstack.down(stack, remove=True)
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
