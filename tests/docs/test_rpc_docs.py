"""docs/rpc.md is generated from the schema files, roles.sql and llm_limits.errors, and kept so.

The reference must agree with what those files say (a stale copy fails with the command that
regenerates it), and the generator must miss nothing: every function in `public` of a database
built by the migrations has a section, callable by exactly the roles its ACL names once
supabase/roles.sql has run.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from llm_limits.local import localstack
from llm_limits.testing import rpc_docs

from ..client.support import Conn

ROOT = Path(__file__).resolve().parents[2]


def test_the_rpc_reference_is_generated_from_the_current_files() -> None:
    written = (ROOT / rpc_docs.OUTPUT).read_text()
    fresh = rpc_docs.render(ROOT)
    diff = "".join(
        difflib.unified_diff(
            written.splitlines(keepends=True), fresh.splitlines(keepends=True),
            "docs/rpc.md (committed)", "docs/rpc.md (generated)", n=1,
        )
    )  # fmt: skip
    assert not diff, f"docs/rpc.md is stale: {rpc_docs.REGENERATE}\n{diff[:4000]}"


def test_every_rpc_of_the_database_is_documented_with_who_may_call_it(
    db: Conn, db_url: str
) -> None:
    localstack.psql(db_url, (ROOT / rpc_docs.ROLES_SQL).read_text())
    rows = db.execute(
        """
        select p.proname, array(
            select a.grantee::regrole::text
            from pg_catalog.aclexplode(p.proacl) as a
            where a.privilege_type = 'EXECUTE' and a.grantee <> p.proowner
            order by 1
        )
        from pg_catalog.pg_proc as p
        where p.pronamespace = 'public'::regnamespace
            and not exists (select from pg_catalog.pg_depend as d
                            where d.objid = p.oid and d.deptype = 'e')
        """
    ).fetchall()
    in_database = {name: sorted(roles) for name, roles in rows}
    documented = {rpc.name: sorted(rpc.callers) for rpc in rpc_docs.read_rpcs(ROOT)}
    assert documented == in_database


def test_the_audit_events_are_the_databases(db: Conn) -> None:
    kinds = [row[0] for row in db.execute("select * from public.audit_event_kinds()").fetchall()]
    assert sorted(rpc_docs.audit_events(ROOT)) == sorted(kinds)
