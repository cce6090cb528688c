"""Every SECURITY DEFINER function of ours is on an explicit allow-list, is
documented (COMMENT ON FUNCTION and a comment block above its CREATE in the
migrations), pins `search_path=''`, and is not executable by PUBLIC, anon or
authenticated.

Why each one is a definer:
* the RPCs: callers (service_role, llm_limits_client) hold EXECUTE and no
  table privilege, so the functions must act as the owner;
* audit_config_change: a trigger that writes the audit log for whoever edits
  the config (service_role, the dashboard), who has no INSERT on the log;
* storage_status: an RPC like the others (`llm-limits status` reads it as
  service_role), though it reads only the catalog.
* the gateway's caller RPCs (add/revoke/identify_caller): the Edge Function and
  the CLI hold EXECUTE, not privileges on google_ai_callers.
* the operator RPCs (enable_key, audit_event_kinds, resolve_model): the CLI
  asks the database for what it would otherwise copy; service_role only.
* usage_report: `llm-limits report` and Supabase Studio read the ledger,
  refusals, audit records and roll-ups through it; service_role only.
* the batch runner's RPCs (batch_outlook, request_outcomes): a notebook holds
  EXECUTE (llm_limits_client), not SELECT on the ledger.
* the end-user RPCs (limit_end_user, block_end_user, unblock_end_user,
  end_user_label, end_users): they hash the raw id under a key no role but the
  owner reads; service_role only.
Additions need a reason here and in the allow-list.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import OUR_SCHEMAS, Conn

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
ALLOWED_DEFINERS = {
    "public.acquire(text,integer,text,integer,text[],text,text,uuid,text)",
    "public.settle(uuid,integer,jsonb,text)",
    "public.pool_keys()",
    "public.observed_limits()",
    "public.class_status()",
    "public.disable_key(text,text)",
    "public.enable_key(text,text)",
    "public.audit_event_kinds()",
    "public.resolve_model(text)",
    "public.run_maintenance()",
    "public.quota_status()",
    "public.token_counter(text)",
    "public.storage_status()",
    "google_ai_internal.audit_config_change()",
    "public.add_caller(text,bytea,text[],text)",
    "public.revoke_caller(text)",
    "public.identify_caller(bytea,text)",
    "public.usage_report(timestamp with time zone,timestamp with time zone,text)",
    "public.batch_outlook(text,text[],text)",
    "public.request_outcomes(text[])",
    "public.limit_end_user(text,integer,integer,text)",
    "public.block_end_user(text,text)",
    "public.unblock_end_user(text)",
    "public.end_user_label(text)",
    "public.end_users()",
}


def definers(conn: Conn) -> dict[str, tuple[object, ...]]:
    rows = conn.execute(
        "select format('%%s.%%s', n.nspname, p.oid::regprocedure::text), "
        "  obj_description(p.oid, 'pg_proc'), p.proconfig, "
        "  has_function_privilege('anon', p.oid, 'EXECUTE'), "
        "  has_function_privilege('authenticated', p.oid, 'EXECUTE'), "
        "  exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) as a "
        "          where a.grantee = 0 and a.privilege_type = 'EXECUTE') "
        "from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace "
        "where p.prosecdef and n.nspname = any(%s)",
        (list(OUR_SCHEMAS),),
    ).fetchall()
    # regprocedure prints public functions without their schema (search_path).
    return {
        re.sub(r"^public\.public\.", "public.", str(r[0])).replace(
            "google_ai_internal.google_ai_internal.", "google_ai_internal."
        ): tuple(r[1:])
        for r in rows
    }


def latest_create_statement(qualified_name: str) -> tuple[str, str]:
    """(text before, the CREATE line) of the last migration defining the function."""
    pattern = re.compile(
        r"^create (or replace )?function " + re.escape(qualified_name) + r"\(", re.MULTILINE
    )
    found: tuple[str, str] | None = None
    for path in sorted(MIGRATIONS.glob("*.sql")):
        text = path.read_text()
        for match in pattern.finditer(text):
            found = (text[: match.start()], path.name)
    assert found is not None, f"no CREATE FUNCTION {qualified_name} in the migrations"
    return found


def test_definers_are_exactly_the_allow_list(db: Conn) -> None:
    assert set(definers(db)) == ALLOWED_DEFINERS


def test_each_definer_pins_search_path_and_is_closed_to_the_api_roles(db: Conn) -> None:
    for name, (comment, config, anon, authenticated, public) in definers(db).items():
        assert comment, f"{name} has no COMMENT ON FUNCTION"
        assert isinstance(config, list) and 'search_path=""' in config, (name, config)
        assert (anon, authenticated, public) == (False, False, False), name


def test_each_definer_has_a_docblock_in_its_migration(db: Conn) -> None:
    for name in definers(db):
        before, migration = latest_create_statement(name.split("(")[0])
        # The lines right above CREATE: a /* ... */ block or a run of -- lines.
        tail = before.rstrip("\n").splitlines()[-1].strip()
        assert tail.endswith("*/") or tail.startswith("--"), f"{name} in {migration}: no docblock"


def test_invoker_functions_are_granted_to_no_role(db: Conn) -> None:
    """The other functions are internal helpers, called only from inside the
    definers (as the owner): no API role may call them directly."""
    rows = db.execute(
        "select p.oid::regprocedure::text, r.rolname "
        "from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace "
        "cross join (values ('anon'), ('authenticated'), ('service_role')) as r (rolname) "
        "where not p.prosecdef and n.nspname = any(%s) "
        "  and has_function_privilege(r.rolname, p.oid, 'EXECUTE')",
        (list(OUR_SCHEMAS),),
    ).fetchall()
    assert rows == []
