"""The role matrix.

* anon and authenticated (PostgREST's roles) reach nothing of ours: no table,
  view, sequence, function, or the private schema, checked object by object
  with has_*_privilege and by actually calling as them (42501);
* service_role executes every RPC;
* supabase/roles.sql's optional `llm_limits_client` logs in, executes the
  RPCs the Python client and its batch runner call (client/llm_limits/db.py,
  batching/pool.py) and no other (no operator RPC: settle disables a refused
  key itself), and can read or change no table directly;
* its `llm_limits_gateway` (the Edge Function's role) executes only the four
  RPCs the gateway calls, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from llm_limits.local import localstack
from tests.conftest import create_database, drop_database
from tests.support import (
    OUR_SCHEMAS,
    Conn,
    acquire,
    add_key,
    add_model,
    commit,
    settle,
    sqlstate_of,
    too_many,
)

REPO = Path(__file__).resolve().parents[2]
API_ROLES = ("anon", "authenticated")
CLIENT_RPCS = {
    "pool_keys()",
    "settle(uuid,integer,jsonb,text)",
    "acquire(text,integer,text,integer,text[],text,text,uuid,text)",
    "token_counter(text)",
    "batch_outlook(text,text[],text)",
    "request_outcomes(text[])",
}
GATEWAY_RPCS = {
    "identify_caller(bytea,text)",
    "pool_keys()",
    "acquire(text,integer,text,integer,text[],text,text,uuid,text)",
    "settle(uuid,integer,jsonb,text)",
}
KEY_INVALID = {"error": {"code": 400, "message": "API key not valid.", "details": [
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}  # fmt: skip
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def reachable(conn: Conn, role: str) -> list[str]:
    """Every privilege `role` holds on an object of ours, as readable strings."""
    rows = conn.execute(
        """
        with objects as (
            select c.oid, c.relkind, format('%%I.%%I', n.nspname, c.relname) as name
            from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
            where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
        )
        select o.name || ': ' || p.priv
        from objects as o
        cross join unnest(%(table_privs)s::text[]) as p (priv)
        where o.relkind <> 'S' and has_table_privilege(%(role)s, o.oid, p.priv)
        union all
        select o.name || ': some column'
        from objects as o
        where o.relkind <> 'S'
          and has_any_column_privilege(%(role)s, o.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
        union all
        select o.name || ': ' || p.priv
        from objects as o cross join unnest(array['USAGE', 'SELECT', 'UPDATE']) as p (priv)
        where o.relkind = 'S' and has_sequence_privilege(%(role)s, o.oid, p.priv)
        union all
        select p.oid::regprocedure::text || ': EXECUTE'
        from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
        where n.nspname = any(%(schemas)s) and has_function_privilege(%(role)s, p.oid, 'EXECUTE')
        union all
        select 'schema google_ai_internal: ' || p.priv
        from unnest(array['USAGE', 'CREATE']) as p (priv)
        where has_schema_privilege(%(role)s, 'google_ai_internal', p.priv)
        order by 1
        """,
        {
            "schemas": list(OUR_SCHEMAS),
            "table_privs": list(TABLE_PRIVILEGES),
            "role": role,
        },
    ).fetchall()
    return [str(r[0]) for r in rows]


def count_objects(conn: Conn) -> int:
    row = conn.execute(
        "select (select count(*) from pg_class as c where c.relnamespace = any(%(s)s::regnamespace[]) "
        "          and c.relkind in ('r', 'S')) "
        "     + (select count(*) from pg_proc as p where p.pronamespace = any(%(s)s::regnamespace[]))",
        {"s": list(OUR_SCHEMAS)},
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("role", API_ROLES)
def test_api_roles_reach_no_object_of_ours(db: Conn, role: str) -> None:
    # The check would pass vacuously on an empty schema.
    assert count_objects(db) > 30
    assert reachable(db, role) == []


@pytest.mark.parametrize("role", API_ROLES)
def test_api_roles_are_refused_when_they_try(db: Conn, role: str) -> None:
    add_model(db, "m-roles", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    attempts = [
        "select * from public.acquire('m-roles', 1)",
        "select * from public.settle('00000000-0000-4000-8000-000000000000', 200)",
        "select public.disable_key('k1')",
        "select public.enable_key('k1')",
        "select * from public.audit_event_kinds()",
        "select public.resolve_model('m-roles')",
        "select public.run_maintenance()",
        "select * from public.quota_status()",
        "select * from public.google_ai_api_keys",
        "select * from public.google_ai_reservations",
        "select * from public.google_ai_audit_log",
        "insert into public.token_usage (model) values ('x')",
        "update public.google_ai_settings set lease_ms = 1000",
        "select nextval('public.google_ai_api_keys_id_seq')",
        "select google_ai_internal.clock()",
    ]
    for sql in attempts:
        with db.transaction(force_rollback=True):
            db.execute(f"set local role {role}")
            assert sqlstate_of(lambda sql=sql: db.execute(sql)) == "42501", sql
    assert db.execute("select count(*) from public.google_ai_reservations").fetchone() == (0,)
    assert db.execute("select is_active from public.google_ai_api_keys").fetchone() == (True,)


def test_service_role_executes_every_rpc(db: Conn) -> None:
    add_model(db, "m-roles", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    add_key(db, "k2")
    db.execute("set role service_role")
    granted = [acquire(db, "m-roles", 5, key_aliases=["k1"]) for _ in range(3)]
    assert all(g[0] for g in granted)
    assert commit(db, granted[0][1], 4, 1) == "commit"
    assert settle(db, granted[1][1], transport_error="not_sent") == "release_unsent"
    assert settle(db, granted[2][1], 429, too_many("1s")) == "rate_limited"
    assert db.execute("select public.disable_key('k2', 'test')").fetchone() == (True,)
    assert db.execute("select public.enable_key('k2', 'test')").fetchone() == (True,)
    assert "key_enabled" in {r[0] for r in db.execute("select * from public.audit_event_kinds()")}
    assert db.execute("select public.resolve_model('m-roles')").fetchone() == ("m-roles",)
    assert db.execute("select public.run_maintenance() ->> 'status'").fetchone() == ("ok",)
    assert db.execute(
        "select rpm_used from public.quota_status() where quota_group = 'k1' and model = 'm-roles'"
    ).fetchone() == (2,)
    db.execute("reset role")


@pytest.fixture
def client_url(db_url: str) -> Iterator[str]:
    """The database with supabase/roles.sql applied (twice: it is idempotent)."""
    sql = (REPO / "supabase" / "roles.sql").read_text()
    # Drift that a re-run must take back.
    localstack.psql(db_url, sql)
    localstack.psql(db_url, "grant select on public.google_ai_api_keys to llm_limits_client")
    localstack.psql(db_url, "grant execute on function public.disable_key(text, text) "
                    "to llm_limits_client")  # fmt: skip
    localstack.psql(db_url, sql)
    # Trust authentication in the test cluster: the password is not checked.
    # The role is cluster-wide and is left in place; its grants go with the
    # database.
    yield db_url.replace("postgresql://postgres@", "postgresql://llm_limits_client:unused@")


def test_roles_sql_is_plain_sql() -> None:
    """The Supabase CLI applies it as-is: no psql meta-commands, no variables."""
    lines = (REPO / "supabase" / "roles.sql").read_text().splitlines()
    code = [line for line in lines if not line.lstrip().startswith("--")]
    assert not any(line.lstrip().startswith("\\") for line in code)
    assert not any(":'" in line or ':"' in line for line in code)


def test_client_role_calls_the_rpcs_and_nothing_else(db: Conn, client_url: str) -> None:
    add_model(db, "m-roles", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    add_key(db, "k2")
    attributes = db.execute(
        "select rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "from pg_roles where rolname = 'llm_limits_client'"
    ).fetchone()
    assert attributes == (True, False, False, False, False, False)
    executable = {
        r.split(": ")[0].removeprefix("public.") for r in reachable(db, "llm_limits_client")
    }
    assert executable == CLIENT_RPCS

    with psycopg.connect(client_url, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == (
            "llm_limits_client",
            "llm_limits_client",
        )
        grants = [acquire(conn, "m-roles", 5, key_aliases=["k1"]) for _ in range(3)]
        assert all(g[0] for g in grants)
        assert commit(conn, grants[0][1], 4, 1) == "commit"
        assert settle(conn, grants[1][1], transport_error="not_sent") == "release_unsent"
        assert settle(conn, grants[2][1], 429, too_many("0s")) == "rate_limited"
        # Google refuses k2: settle disables it, the client never does so itself.
        on_k2 = acquire(conn, "m-roles", 5, key_aliases=["k2"])
        assert settle(conn, on_k2[1], 400, KEY_INVALID) == "disable_key"
        assert conn.execute("select key_alias from public.pool_keys()").fetchall() == [("k1",)]

        tables = [
            str(r[0])
            for r in db.execute(
                "select format('%%I.%%I', schemaname, tablename) from pg_tables "
                "where schemaname = any(%s) order by 1",
                (list(OUR_SCHEMAS),),
            ).fetchall()
        ]
        assert len(tables) >= 10
        for table in tables:
            assert (
                sqlstate_of(lambda t=table: conn.execute(f"select 1 from {t} limit 1")) == "42501"
            ), table
        for sql in (
            "select public.disable_key('k1')",
            "select public.enable_key('k2')",
            "select * from public.quota_status()",
            "select public.run_maintenance()",
            "select google_ai_internal.clock()",
            "select google_ai_internal.release_reservation(null, 'x', false)",
            "update public.google_ai_api_keys set is_active = true",
            "delete from public.google_ai_audit_log",
        ):
            assert sqlstate_of(lambda sql=sql: conn.execute(sql)) == "42501", sql
    assert db.execute(
        "select rpm_used from public.quota_status() where quota_group = 'k1' and model = 'm-roles'"
    ).fetchone() == (2,)
    # What the client did is audited under its own name.
    assert db.execute(
        "select actor from public.google_ai_audit_log where event = 'config_changed' "
        "and key_alias = 'k2' order by id desc limit 1"
    ).fetchone() == ("llm_limits_client",)


def test_gateway_role_calls_its_rpcs_and_nothing_else(db: Conn, client_url: str) -> None:
    add_model(db, "m-roles", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    digest = hashlib.sha256(b"llmk_roles").digest()
    db.execute("select public.add_caller('gw-test', %s::bytea)", (digest,))
    attributes = db.execute(
        "select rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "from pg_roles where rolname = 'llm_limits_gateway'"
    ).fetchone()
    assert attributes == (True, False, False, False, False, False)
    # Every privilege it holds on our objects, checked object by object: these four only.
    executable = {
        r.split(": ")[0].removeprefix("public.") for r in reachable(db, "llm_limits_gateway")
    }
    assert executable == GATEWAY_RPCS

    gateway_url = client_url.replace("llm_limits_client:", "llm_limits_gateway:")
    with psycopg.connect(gateway_url, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("select current_user").fetchone() == ("llm_limits_gateway",)
        found = conn.execute(
            "select caller, model_allowed from public.identify_caller(%s::bytea, 'm-roles')",
            (digest,),
        ).fetchone()
        assert found == ("gw-test", True)
        assert conn.execute("select key_alias from public.pool_keys()").fetchall() == [("k1",)]
        grant = acquire(conn, "m-roles", 5, key_aliases=["k1"])
        assert grant[0]
        answer = json.dumps({"usageMetadata": {"promptTokenCount": 4}})
        verdict = conn.execute(
            "select action, retry from public.settle(%s, 200, %s::jsonb)", (grant[1], answer)
        ).fetchone()
        assert verdict == ("commit", False)

        # What it cannot do: any other RPC, any table.
        for sql in (
            "select public.disable_key('k1')",
            "select public.enable_key('k1')",
            "select * from public.quota_status()",
            "select * from public.token_counter('m-roles')",
            "select public.add_caller('intruder', sha256('x'::bytea))",
            "select public.revoke_caller('gw-test')",
            "select public.run_maintenance()",
            "select google_ai_internal.clock()",
            "select * from public.google_ai_api_keys",
            "select * from public.google_ai_callers",
            "select * from public.google_ai_reservations",
            "update public.google_ai_settings set lease_ms = 1000",
        ):
            assert sqlstate_of(lambda sql=sql: conn.execute(sql)) == "42501", sql
    assert db.execute("select is_active from public.google_ai_api_keys").fetchone() == (True,)
    active_callers = db.execute("select count(*) from public.google_ai_callers where active")
    assert active_callers.fetchone() == (1,)


def test_two_databases_run_roles_sql_at_once(db_url: str) -> None:
    """Each database's deploy runs roles.sql, and the roles are the cluster's: two at once, 40
    times each, raise nothing (before roles.sql altered a role only when it differed, half of
    these runs failed with "tuple concurrently updated")."""
    sql = (REPO / "supabase" / "roles.sql").read_text()
    other = create_database()
    errors: list[str] = []

    def converge(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(40):
                try:
                    conn.execute(sql)
                except psycopg.Error as exc:
                    errors.append(str(exc))

    try:
        runs = [threading.Thread(target=converge, args=(url,)) for url in (db_url, other)]
        for run in runs:
            run.start()
        for run in runs:
            run.join()
    finally:
        drop_database(other)
    assert errors == []


def test_a_rerun_leaves_converged_roles_unwritten(db_url: str) -> None:
    """Roles are cluster-wide and every database's deploy runs roles.sql: a re-run that found
    the roles as they should be writes no pg_authid row (two ALTER ROLEs of one role at once
    fail with "tuple concurrently updated")."""
    sql = (REPO / "supabase" / "roles.sql").read_text()
    localstack.psql(db_url, sql)
    with psycopg.connect(db_url) as conn:
        # One snapshot: a row this transaction wrote is the only kind age(xmin) = 0 can show.
        conn.execute("set transaction isolation level repeatable read")
        conn.execute(sql)
        written = conn.execute(
            "select rolname from pg_authid where rolname like 'llm_limits_%%' and age(xmin) = 0"
        ).fetchall()
        assert conn.execute(
            "select count(*) from pg_authid where rolname in "
            "('llm_limits_client', 'llm_limits_gateway') and rolcanlogin and not rolinherit"
        ).fetchone() == (2,)
        conn.rollback()
    assert written == []


def test_roles_sql_sets_a_password_from_a_setting(db_url: str) -> None:
    sql = (REPO / "supabase" / "roles.sql").read_text()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("set llm_limits.client_password = 'correct horse'")
        conn.execute("set llm_limits.gateway_password = 'battery staple'")
        conn.execute(sql)
        rows = conn.execute(
            "select rolname, rolpassword like 'SCRAM-SHA-256$%%' or rolpassword like 'md5%%' "
            "from pg_authid where rolname like 'llm_limits_%%' order by 1"
        ).fetchall()
        assert rows == [("llm_limits_client", True), ("llm_limits_gateway", True)]
        conn.execute("alter role llm_limits_client password null")
        conn.execute("alter role llm_limits_gateway password null")
