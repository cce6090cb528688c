"""The migrations adopt the five tables production already has.

Production's column names are known (the seed), their types are not. Each
case builds a legacy database with different id and bucket types and real
rows, deploys with the real `supabase db push`, and checks that every row is
kept, that operator-edited limits survive, that a second push is a no-op, and
that the RPCs work on top of the adopted tables.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from llm_limits.local import localstack
from tests.conftest import create_database, drop_database
from tests.support import commit

REPO = Path(__file__).resolve().parents[2]

BIGINT_LEGACY = """
create table google_ai_api_keys (id bigserial primary key, key_alias text not null,
  env_var_name text, is_active boolean default true, priority int default 1,
  created_at timestamptz default now(), notes text);
create table google_ai_model_limits (id serial primary key, model text not null, rpm int,
  tpm int, rpd int, created_at timestamptz default now(), updated_at timestamptz default now());
create table google_ai_usage_counters (id bigserial primary key,
  api_key_id bigint not null references google_ai_api_keys (id), minute_bucket timestamptz not null,
  day_bucket date not null, rpm_used int default 0, tpm_used int default 0, rpd_used int default 0,
  updated_at timestamptz default now());
create table token_usage (id bigserial primary key, ts timestamptz default now(), model text,
  prompt_tokens int, completion_tokens int, total_tokens int, request_id text, meta jsonb);
create table google_ai_maintenance_log (id bigserial primary key, operation text,
  tables_affected text[], deleted_count int, started_at timestamptz, completed_at timestamptz,
  status text, details jsonb, created_at timestamptz default now());
"""

UUID_LEGACY = """
create table google_ai_api_keys (id uuid primary key default gen_random_uuid(),
  key_alias text not null unique, env_var_name text, is_active boolean, priority smallint,
  created_at timestamptz default now(), notes text);
create table google_ai_model_limits (id uuid primary key default gen_random_uuid(),
  model text not null unique, rpm int, tpm int, rpd int, created_at timestamptz default now(),
  updated_at timestamptz);
create table google_ai_usage_counters (id uuid primary key default gen_random_uuid(),
  api_key_id uuid not null, minute_bucket bigint not null, day_bucket bigint not null,
  rpm_used int, tpm_used int, rpd_used int, updated_at timestamptz);
create table token_usage (id uuid primary key default gen_random_uuid(),
  ts timestamptz default now(), model text, prompt_tokens int, completion_tokens int,
  total_tokens int, request_id uuid, meta json);
create table google_ai_maintenance_log (id uuid primary key default gen_random_uuid(),
  operation text, tables_affected text, deleted_count bigint, started_at timestamptz,
  completed_at timestamptz, status text, details text, created_at timestamptz default now());
"""

LEGACY_ROWS = """
insert into google_ai_api_keys (key_alias, env_var_name, is_active, priority, notes)
values ('bot-main', 'GOOGLE_API_KEY', true, 1, 'the bot'), ('kaggle-1', 'KAGGLE_KEY_1', true, 2, null),
       ('old', 'OLD_KEY', false, 9, 'retired');
-- The operator lowered Gemma's RPM; the seed must not undo it.
insert into google_ai_model_limits (model, rpm, tpm, rpd) values ('gemma-3-27b', 10, 15000, 14400);
insert into token_usage (model, prompt_tokens, completion_tokens, total_tokens, meta)
values ('gemma-3-27b-it', 10, 5, 15, '{"source": "llm_logger"}');
insert into google_ai_maintenance_log (operation, status) values ('manual cleanup', 'ok');
"""

COUNTER_ROWS = {
    "bigint": """insert into google_ai_usage_counters (api_key_id, minute_bucket, day_bucket, rpm_used)
                 select id, '2026-01-01 10:00Z', '2026-01-01', 3 from google_ai_api_keys""",
    "uuid": """insert into google_ai_usage_counters (api_key_id, minute_bucket, day_bucket, rpm_used)
               select id, 1767261600, 20454, 3 from google_ai_api_keys""",
}

TABLES = [
    "google_ai_api_keys",
    "google_ai_model_limits",
    "google_ai_usage_counters",
    "token_usage",
    "google_ai_maintenance_log",
]


def legacy_columns(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """Each table's column list as it is before our migrations run."""
    out = {}
    for table in TABLES:
        row = conn.execute(
            "select string_agg(quote_ident(column_name), ',' order by ordinal_position) "
            "from information_schema.columns where table_schema = 'public' and table_name = %s",
            (table,),
        ).fetchone()
        assert row and row[0]
        out[table] = str(row[0])
    return out


def snapshot(
    conn: psycopg.Connection[tuple[object, ...]], columns: dict[str, str]
) -> dict[str, set[str]]:
    """Every row of every legacy table, as the text of its legacy columns."""
    return {
        table: {str(r[0]) for r in conn.execute(f"select row({cols})::text from public.{table}")}
        for table, cols in columns.items()
    }


@pytest.fixture(params=["bigint", "uuid"])
def legacy_url(request: pytest.FixtureRequest) -> object:
    url = create_database(template=None, prefix="legacy")
    localstack.bootstrap(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BIGINT_LEGACY if request.param == "bigint" else UUID_LEGACY)
        conn.execute(LEGACY_ROWS)
        conn.execute(COUNTER_ROWS[request.param])
    yield url
    drop_database(url)


def test_push_keeps_every_legacy_row_and_edited_limit(legacy_url: str) -> None:
    with psycopg.connect(legacy_url, autocommit=True) as conn:
        columns = legacy_columns(conn)
        before = snapshot(conn, columns)

    output = localstack.push(legacy_url, REPO)
    assert "Applying migration" in output
    assert "Remote database is up to date" in localstack.push(legacy_url, REPO)

    with psycopg.connect(legacy_url, autocommit=True) as conn:
        after = snapshot(conn, columns)
        # Every legacy row is still there with every legacy value unchanged.
        for table in TABLES:
            assert before[table] <= after[table], table
        assert conn.execute("select count(*) from google_ai_api_keys").fetchone() == (3,)
        assert conn.execute(
            "select rpm, tpm, rpd, api_model from google_ai_model_limits where model = 'gemma-3-27b'"
        ).fetchone() == (10, 15000, 14400, "gemma-3-27b-it")
        # The missing models are seeded, the existing one is not duplicated.
        assert conn.execute(
            "select count(*) from google_ai_model_limits where model like 'gem%'"
        ).fetchone() == (3,)
        assert conn.execute(
            "select count(*) from token_usage where meta::jsonb ->> 'source' = 'llm_logger'"
        ).fetchone() == (1,)
        assert conn.execute("select count(*) from google_ai_usage_counters").fetchone() == (3,)

        # The RPCs work on the adopted tables, whatever their id types.
        grant = conn.execute(
            "select granted, key_alias, reservation_id from public.acquire("
            "model => 'gemma-3-27b-it', tokens => 100, key_aliases => array['kaggle-1'])"
        ).fetchone()
        assert grant is not None and grant[0] is True and grant[1] == "kaggle-1"
        assert commit(conn, grant[2], 80, 20) == "commit"
        assert conn.execute(
            "select total_tokens, meta::jsonb ->> 'key_alias' from token_usage "
            "where meta::jsonb ->> 'reservation_id' = %s",
            (str(grant[2]),),
        ).fetchone() == (100, "kaggle-1")
        log = conn.execute("select public.run_maintenance() ->> 'status'").fetchone()
        assert log == ("ok",)

    with psycopg.connect(legacy_url, autocommit=True) as conn:
        final = snapshot(conn, columns)
    for table in TABLES:
        assert before[table] <= final[table], f"{table} lost or changed a legacy row"
