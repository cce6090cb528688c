"""Upgrading a live database to one settling surface (migration 20261206003000): commit_usage,
release and report_rate_limit leave public for settle's internal steps, max_wait_cap_ms goes,
every wait ticket has a deadline, and the client role loses the operator's RPCs.

The database is built from the migrations before it with the real `supabase db push` and
filled as a bot leaves it: calls settled through the retired RPCs and through settle, calls
still on their way to Google, a group cooling down after a 429, changed settings, the client
role holding what the old roles.sql granted, and two waiters in the line of a full window, one
of them with a ticket from before deadlines were stored (its deadline null). Then the full set
is pushed. Afterwards every row is still there (the null deadline filled in, the dropped column
gone), the catalog equals the schema files', pgTAP passes on a clone, the calls in flight settle
through settle, the waiter without a deadline keeps its place at the head of the line and is
served first, and a settings change is still audited.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llm_limits.local import localstack
from tests.conftest import create_database, drop_database
from tests.migrations import test_upgrade_protocol as protocol
from tests.migrations.conftest import assert_same_catalog
from tests.migrations.test_upgrade import (
    REPO,
    Rows,
    all_rows,
    assert_every_row_kept,
    migrations_before,
    push,
    run_pgtap_on_a_clone,
)
from tests.support import Conn, acquire, add_key, add_model, commit, settle, too_many

SURFACE = "20261206003000"
FIRST, SECOND = uuid.UUID(int=31), uuid.UUID(int=32)
RETIRED = (
    "public.commit_usage(uuid, integer, integer, jsonb)",
    "public.release(uuid, text, boolean)",
    "public.report_rate_limit(uuid, text, integer)",
)
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"


def wait(conn: Conn, caller: str, max_wait_ms: int, ticket: uuid.UUID) -> dict[str, Any]:
    return protocol.wait(conn, caller, max_wait_ms, ticket, model="su-model", key="su-a")


def fill(conn: Conn) -> dict[str, object]:
    """A bot's traffic before the upgrade, stopped mid-call, with two waiters in line."""
    add_model(conn, "su-model", rpm=5, tpm=50_000, rpd=1000, api="su-model-it")
    add_key(conn, "su-a", group="su-project")
    add_key(conn, "su-b", group="su-other")
    # Settings an operator changed; the waiters' places must outlive the push.
    conn.execute(
        "update public.google_ai_settings set max_wait_cap_ms = 60000,"
        " default_cooldown_ms = 45000, wait_ticket_grace_ms = 60000"
    )
    # What the old roles.sql granted the client role besides what a carrier calls.
    conn.execute(
        "do $$ begin if not exists (select from pg_roles where rolname = 'llm_limits_client')"
        " then create role llm_limits_client nologin; end if; end $$"
    )
    conn.execute(
        "grant execute on function public.disable_key(text, text), public.quota_status()"
        " to llm_limits_client"
    )

    def grant(key: str, tokens: int) -> object:
        row = acquire(conn, "su-model", tokens, key_aliases=[key], caller="festival-bot")
        assert row[0], row
        return row[1]

    # su-a's window (RPM 5) fills: two commits, a refund, a sent release, two calls in flight.
    conn.execute("select public.commit_usage(%s, 250, 40)", (grant("su-a", 300),))
    assert commit(conn, grant("su-a", 300), 280, 12) == "commit"
    conn.execute("select public.release(%s, 'never sent', false)", (grant("su-a", 300),))
    conn.execute("select public.release(%s, 'timeout', true)", (grant("su-a", 300),))
    to_commit, to_refund = grant("su-a", 400), grant("su-a", 200)
    # su-b: one call in flight, one answered 429 (its group cools down).
    to_limit = grant("su-b", 100)
    conn.execute(
        "select public.report_rate_limit(%s, %s, 600000)", (grant("su-b", 100), PER_MINUTE)
    )
    # Two waiters in su-a's line: the first one's ticket is as a client from before
    # 20261205000200 left it (the deadline column came then, null for places in line).
    for caller, ticket in (("waiter-1", FIRST), ("waiter-2", SECOND)):
        assert wait(conn, caller, 30_000, ticket)["reason"] == "queued"
    conn.execute(
        "update google_ai_internal.wait_tickets set deadline = null where id = %s", (FIRST,)
    )
    return {"commit": to_commit, "refund": to_refund, "limit": to_limit}


@pytest.fixture
def upgraded(tmp_path: Path) -> Iterator[tuple[str, Rows, dict[str, object]]]:
    url = create_database(template=None, prefix="upgrade24")
    try:
        localstack.bootstrap(url)
        first = push(url, migrations_before(tmp_path, SURFACE))
        assert SURFACE not in first
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            ids = fill(conn)
            before = all_rows(conn)
        output = push(url, REPO)
        assert f"Applying migration {SURFACE}_drop_pre_settle_surface.sql" in output
        yield url, before, ids
    finally:
        drop_database(url)


def test_live_rows_cross_to_one_settling_surface(
    upgraded: tuple[str, Rows, dict[str, object]], schema_files_url: str, tmp_path: Path
) -> None:
    url, before, ids = upgraded
    [settings] = before["public.google_ai_settings"]
    assert settings["max_wait_cap_ms"] == 60000
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        after = all_rows(conn)
        assert_every_row_kept(before, after)
        [new_settings] = after["public.google_ai_settings"]
        assert "max_wait_cap_ms" not in new_settings
        assert (new_settings["default_cooldown_ms"], new_settings["wait_ticket_grace_ms"]) == (
            45000,
            60000,
        )
        assert conn.execute(
            "select count(*) from unnest(%s::text[]) as s where to_regprocedure(s) is not null",
            (list(RETIRED),),
        ).fetchone() == (0,)
        assert conn.execute(
            "select has_function_privilege('llm_limits_client', 'public.disable_key(text, text)',"
            " 'execute'), has_function_privilege('llm_limits_client', 'public.quota_status()',"
            " 'execute')"
        ).fetchone() == (False, False)
        # The ticket without a deadline got the longest wait acquire accepts (a day); the
        # other kept its own.
        tickets = conn.execute(
            "select id, deadline - clock_timestamp() > interval '23 hours'"
            " from google_ai_internal.wait_tickets order by seq"
        ).fetchall()
        assert tickets == [(FIRST, True), (SECOND, False)], "the waiters keep their places"
    assert_same_catalog(url, "the upgraded database", schema_files_url, tmp_path / "catalogs")

    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        # The calls in flight settle through settle.
        assert settle(conn, ids["limit"], 429, too_many("30s", PER_MINUTE)) == "rate_limited"
        assert commit(conn, ids["commit"], 350, 20) == "commit"
        assert settle(conn, ids["refund"], transport_error="not_sent") == "release_unsent"
        ledger = dict(
            conn.execute(
                "select id, (status, counted_requests, counted_tokens)::text"
                " from public.google_ai_reservations where id = any(%s)",
                ([ids["limit"], ids["commit"], ids["refund"]],),
            ).fetchall()
        )
        assert ledger == {
            ids["limit"]: "(rate_limited,1,100)",
            ids["commit"]: "(committed,1,350)",
            ids["refund"]: "(released,0,0)",
        }
        # The refund freed one slot: the waiter without a deadline is at the head and gets
        # it; the one behind it ends with its own call's wait.
        answer = wait(conn, "waiter-1", 5_000, FIRST)
        while answer["reason"] == "queued":
            time.sleep(answer["retry_after_ms"] / 1000)
            answer = wait(conn, "waiter-1", 5_000, FIRST)
        assert (answer["granted"], answer["key_alias"]) == (True, "su-a")
        answer = wait(conn, "waiter-2", 300, SECOND)
        while answer["reason"] == "queued":
            time.sleep(answer["retry_after_ms"] / 1000)
            answer = wait(conn, "waiter-2", 300, SECOND)
        assert (answer["granted"], answer["reason"]) == (False, "wait_timeout")

        # A settings change (back to the defaults the pgTAP suite expects) is still audited,
        # without the dropped column.
        conn.execute(
            "update public.google_ai_settings set wait_ticket_grace_ms = 1000,"
            " default_cooldown_ms = 60000"
        )
        [(old, new)] = conn.execute(
            "select details -> 'old', details -> 'new' from public.google_ai_audit_records"
            " where event = 'config_changed' and details ->> 'table' = 'google_ai_settings'"
            " order by id desc limit 1"
        ).fetchall()
        assert (old["wait_ticket_grace_ms"], new["wait_ticket_grace_ms"]) == (60000, 1000)
        assert "max_wait_cap_ms" not in new

    run_pgtap_on_a_clone(url)
