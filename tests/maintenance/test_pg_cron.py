"""The maintenance schedule, both ways migration 20261124000900 can go.

Path A: the database pg_cron serves (`cron.database_name`, llm_limits_cron in
`make test`): the push creates the extension in pg_catalog and schedules the
job; a second push is a no-op and leaves exactly one job.
Path B: any other database (every template clone): the migration applies and
leaves no trace of pg_cron.

Path A needs a cluster started with `shared_preload_libraries=pg_cron` and
`cron.database_name=llm_limits_cron` (scripts/test.sh does); elsewhere it skips.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from llm_limits.local import localstack
from tests.conftest import admin_url, url_for
from tests.support import Conn

REPO = Path(__file__).resolve().parents[2]
CRON_DB = "llm_limits_cron"
JOB = ("llm-limits-maintenance", "*/5 * * * *", "select public.run_maintenance()")


def cron_database_name() -> str | None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        row = conn.execute("select current_setting('cron.database_name', true)").fetchone()
    return None if row is None else row[0]


@pytest.fixture(scope="module")
def cron_push() -> Iterator[tuple[str, str]]:
    """llm_limits_cron, freshly bootstrapped and pushed once; (url, push output).

    The database is emptied, never dropped: DROP DATABASE ... WITH (FORCE)
    terminates pg_cron's scheduler with a clean exit, and the postmaster does
    not restart it, so no job would run again until the cluster restarts.
    """
    if cron_database_name() != CRON_DB:
        pytest.skip(f"cluster not started with pg_cron for {CRON_DB} (see scripts/test.sh)")
    url = url_for(CRON_DB)
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (CRON_DB,)).fetchone()
        if not exists:
            conn.execute(f'create database "{CRON_DB}"')
    if exists:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "drop extension if exists pg_cron; "
                "drop schema if exists google_ai_internal, supabase_migrations cascade; "
                "drop schema public cascade; create schema public"
            )
    localstack.bootstrap(url)
    yield url, localstack.push(url, REPO)


@pytest.fixture
def cron_url(cron_push: tuple[str, str]) -> str:
    return cron_push[0]


def jobs(conn: Conn) -> list[tuple[object, ...]]:
    return [
        tuple(r)
        for r in conn.execute(
            "select jobid, jobname, schedule, command, database, username, active "
            "from cron.job order by jobid"
        ).fetchall()
    ]


def test_path_a_cron_database_gets_the_extension_and_one_job(cron_push: tuple[str, str]) -> None:
    cron_url, first = cron_push
    assert "Applying migration 20261124000900_schedule_maintenance.sql" in first
    with psycopg.connect(cron_url, autocommit=True) as conn:
        assert conn.execute(
            "select extnamespace::regnamespace::text from pg_extension where extname = 'pg_cron'"
        ).fetchall() == [("pg_catalog",)]
        scheduled = jobs(conn)
        assert [r[1:] for r in scheduled] == [(*JOB, CRON_DB, "postgres", True)]

    assert "Remote database is up to date" in localstack.push(cron_url, REPO)
    with psycopg.connect(cron_url, autocommit=True) as conn:
        assert jobs(conn) == scheduled, "a second push changed the schedule"
        # The job's command is exactly what an operator can run by hand.
        out = conn.execute(str(scheduled[0][3]) + " ->> 'status'").fetchone()
        assert out == ("ok",)


def test_path_b_other_databases_get_no_pg_cron(db: Conn) -> None:
    assert db.execute(
        "select count(*) from supabase_migrations.schema_migrations "
        "where version = '20261124000900'"
    ).fetchone() == (1,)
    assert db.execute("select count(*) from pg_extension where extname = 'pg_cron'").fetchone() == (
        0,
    )
    assert db.execute("select to_regnamespace('cron')").fetchone() == (None,)
    # Maintenance still works here: it is just not scheduled.
    assert db.execute("select public.run_maintenance() ->> 'status'").fetchone() == ("ok",)


@pytest.mark.slow
def test_path_a_job_command_runs_under_pg_cron(cron_url: str) -> None:
    """pg_cron 1.4 schedules by the minute: run the job's command once a minute
    through pg_cron itself and wait for a logged run (up to ~75 s)."""
    with psycopg.connect(cron_url, autocommit=True) as conn:
        command = conn.execute(
            "select command from cron.job where jobname = 'llm-limits-maintenance'"
        ).fetchone()
        assert command is not None
        logs = conn.execute("select count(*) from public.google_ai_maintenance_log").fetchone()
        conn.execute("select cron.schedule('llm-limits-test', '* * * * *', %s)", (command[0],))
        try:
            deadline = time.monotonic() + 75
            status = None
            while status is None and time.monotonic() < deadline:
                time.sleep(1)
                status = conn.execute(
                    "select d.status, d.return_message from cron.job_run_details as d "
                    "join cron.job as j using (jobid) where j.jobname = 'llm-limits-test' "
                    "and d.status in ('succeeded', 'failed') order by d.runid desc limit 1"
                ).fetchone()
        finally:
            conn.execute("select cron.unschedule('llm-limits-test')")
        assert status is not None and status[0] == "succeeded", status
        after = conn.execute("select count(*) from public.google_ai_maintenance_log").fetchone()
        assert logs is not None and after is not None and after[0] > logs[0]
