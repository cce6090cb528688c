"""supabase/schemas and supabase/migrations build the same database.

supabase/schemas holds the current definition of every object (one idea per file, applied
in file-name order); the migrations are how a deployed database gets there. One database is
built from the schema files (psql, after the hosted-project bootstrap), the other is the
migrated template (`supabase db push`), and their catalogs are compared object by object:
functions' definitions and attributes, tables with columns, constraints, indexes, triggers
and RLS, views, sequences, types, grants, comments, and the rows the schema defines
(llm_limits.testing.schemas). The check itself is checked: every object of ours is in the
catalog, and a change of each kind shows up, named.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from llm_limits.testing import schemas
from tests.conftest import create_database, drop_database
from tests.migrations.conftest import REPO, assert_same_catalog

SCHEMA_DIR = REPO / "supabase" / "schemas"


def test_schema_files_are_numbered_and_all_listed_in_config() -> None:
    files = sorted(SCHEMA_DIR.glob("*.sql"))
    assert files, "supabase/schemas holds no .sql file"
    bad = [f.name for f in files if not re.fullmatch(r"\d{3}_[a-z0-9_]+\.sql", f.name)]
    assert not bad, f"name schema files NNN_what.sql (lowercase), in order of application: {bad}"
    numbers = [f.name[:3] for f in files]
    assert len(set(numbers)) == len(numbers), f"two schema files share a number: {numbers}"
    assert schemas.schema_files(REPO) == files, "config.toml [db.migrations] schema_paths"
    assert [p for p in SCHEMA_DIR.rglob("*") if p.is_file() and p.suffix != ".sql"] == [
        SCHEMA_DIR / "README.md"
    ]


def test_migrations_build_what_the_schema_files_define(
    db_url: str, schema_files_url: str, tmp_path: Path
) -> None:
    assert_same_catalog(
        db_url, "supabase/migrations", schema_files_url, save_to=tmp_path, rows=True
    )


def test_the_catalog_holds_every_object_of_ours(db_url: str) -> None:
    entries = schemas.catalog(db_url)
    tables = "\n".join(v for k, v in entries.items() if k.startswith(("table ", "view ")))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("set search_path = pg_catalog")
        classes = conn.execute(
            "select c.oid::regclass::text, c.relkind::text, c.relname from pg_class as c "
            "where c.relnamespace::regnamespace::text in ('public', 'google_ai_internal')"
        ).fetchall()
        functions = conn.execute(
            "select p.oid::regprocedure::text from pg_proc as p "
            "where p.pronamespace::regnamespace::text in ('public', 'google_ai_internal')"
        ).fetchall()
    assert classes and functions
    missing = [f"function {sig}" for (sig,) in functions if f"function {sig}" not in entries]
    for name, kind, relname in classes:
        if kind in ("r", "p", "f"):
            found = f"table {name}" in entries
        elif kind == "v":
            found = f"view {name}" in entries
        elif kind == "m":
            found = f"materialized view {name}" in entries
        elif kind == "S":
            found = f"sequence {name}" in entries
        elif kind in ("i", "I"):
            found = f"index {relname} " in tables
        elif kind == "c":
            found = f"type {name}" in entries
        else:
            found = False
        if not found:
            missing.append(f"{name} (relkind {kind})")
    assert not missing, f"objects the catalog check does not cover: {missing}"


# One change of each kind the check must see, and the object it must name.
DRIFT = {
    "function google_ai_internal.check_text(text,text,integer)": """
        create or replace function google_ai_internal.check_text(p_name text, p_value text, p_max integer)
        returns text language plpgsql immutable set search_path = '' as $$
        begin
            return p_value;
        end;
        $$""",
    "function google_ai_internal.clock()": (
        "grant execute on function google_ai_internal.clock() to service_role"
    ),
    "function public.disable_key(text,text)": (
        "alter function public.disable_key(text, text) set lock_timeout = '1s'"
    ),
    "function public.token_counter(text)": "comment on function public.token_counter(text) is 'x'",
    "table public.google_ai_reservations": "drop index public.google_ai_reservations_window_idx",
    "table public.google_ai_settings": (
        "alter table public.google_ai_settings alter column lease_ms set default 1000"
    ),
    "table public.google_ai_callers": "alter table public.google_ai_callers disable row level security",
    "table public.google_ai_refusals": "grant insert on public.google_ai_refusals to service_role",
    "table public.google_ai_group_limits": (
        "alter table public.google_ai_group_limits drop constraint google_ai_group_limits_rpm_check"
    ),
    "table public.google_ai_api_keys": (
        "alter table public.google_ai_api_keys disable trigger google_ai_api_keys_touch"
    ),
    "view public.google_ai_audit_log": "comment on view public.google_ai_audit_log is 'x'",
    "sequence public.token_usage_id_seq": "grant usage on sequence public.token_usage_id_seq to anon",
    "type public.acquire_result": "comment on type public.acquire_result is 'x'",
    "rows google_ai_internal.clock_switch": "update google_ai_internal.clock_switch set steerable = true",
    "function public.run_maintenance()": "drop function public.run_maintenance()",
    "function public.extra_rpc()": (
        "create function public.extra_rpc() returns integer language sql as 'select 1'"
    ),
}


def test_the_check_names_each_object_that_drifted(schema_files_url: str) -> None:
    name = schema_files_url.rsplit("/", 1)[1]
    url = create_database(template=name, prefix="drift")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in DRIFT.values():
                conn.execute(statement)
        report = schemas.differences(
            schemas.catalog(schema_files_url), schemas.catalog(url), "schemas", "drifted"
        )
    finally:
        drop_database(url)
    named = {line.split(": ", 1)[0] for line in report}
    assert named == set(DRIFT), "\n\n".join(report)
    by_name = {line.split(": ", 1)[0]: line for line in report}
    assert ": only in drifted" in by_name["function public.extra_rpc()"]
    assert ": only in schemas" in by_name["function public.run_maintenance()"]
    # A changed definition is shown from both sides, with the object's name on each.
    body = by_name["function google_ai_internal.check_text(text,text,integer)"]
    assert "--- function google_ai_internal.check_text(text,text,integer) (schemas)" in body
    assert "-            errcode = 'LL007'," in body
