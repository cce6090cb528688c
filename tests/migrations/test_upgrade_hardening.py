"""Upgrading a live database from the schema before the hardening of
2026-11-29 (migrations older than 20261129001200): the per-call audit rows of
live ledger rows move into the ledger, everything else stays, and no event
is lost or shown twice.

The database is built from exactly those migrations with the real
`supabase db push`, filled through the RPCs as a bot would (grants, commits,
a refund, a sent release, a 429, NO_WAIT refusals, an expired lease, a
disabled key, config changes, and calls old enough that their ledger rows
were rolled up while their audit rows stayed), then the full set is pushed.
Afterwards every row is still there (audit rows read back from the audit
stream, with their id, time, actor and details), the stream counts every
event exactly as often as before, quota_status() is unchanged, the catalog
equals the one the schema files (supabase/schemas) build, pgTAP passes on a
clone, and a maintenance pass far in the future counts every one of those
events in google_ai_event_counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from llm_limits.local import localstack
from tests.conftest import create_database, drop_database
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
from tests.support import Conn, acquire, add_key, add_model, commit

HARDENING = "20261129001200"
EVENTS = "select event, count(*)::int from public.google_ai_audit_log group by 1"
# Later migrations seed gemma-3-12b, its fallback chain and interactive's fallback_after_ms,
# and move learn_limits to its new default: config changes of their own.
EVENTS_COUNTED = (
    "select event, sum(coalesce((details ->> 'count')::int, 1))::int "
    "from public.google_ai_audit_log where not coalesce("
    " event = 'config_changed' and (details -> 'new' ->> 'model' = 'gemma-3-12b'"
    " or details ->> 'table' in ('google_ai_fallbacks', 'google_ai_caller_classes')"
    " or details -> 'new' ->> 'learn_limits' = 'apply'), false) group by 1"
)
EVENTS_ALL = (
    "select event, sum(coalesce((details ->> 'count')::int, 1))::int "
    "from public.google_ai_audit_log group by 1"
)
STATUS = (
    "select quota_group, model, rpm_used, tpm_used, rpd_used, in_flight, "
    "cooldown_until is not null from public.quota_status() where model <> 'gemma-3-12b'"
    " order by 1, 2"
)


def fill(conn: Conn) -> dict[str, object]:
    """A bot's traffic under the old schema (its clock still honours llm_limits.now)."""
    add_model(conn, "hz-model", rpm=6, tpm=50_000, rpd=1000, api="hz-model-it")
    add_key(conn, "hz-a", group="hz-project", priority=1)
    add_key(conn, "hz-b", group="hz-project", priority=2)
    add_key(conn, "hz-solo")
    # Ten days ago: ledger rows that maintenance rolls up, audit rows that stay.
    ten_days_ago = datetime.now(timezone.utc) - timedelta(days=10)
    conn.execute("select set_config('llm_limits.now', %s, false)", (ten_days_ago.isoformat(),))
    for _ in range(3):
        old = acquire(conn, "hz-model", 300, key_aliases=["hz-solo"], caller="festival-bot")
        conn.execute("select public.commit_usage(%s, 250, 40)", (old[1],))
    conn.execute("reset llm_limits.now")
    assert conn.execute("select public.run_maintenance()").fetchone() is not None

    conn.execute("update public.google_ai_settings set lease_ms = 1000")
    expiring = acquire(conn, "hz-model", 100, key_aliases=["hz-b"], caller="killed")
    conn.execute("update public.google_ai_settings set lease_ms = 600000")
    grants = [
        acquire(
            conn,
            "hz-model-it",
            1000,
            key_aliases=["hz-a"],
            caller="festival-bot",
            request_id=f"tg-{i}",
        )
        for i in range(5)
    ]
    assert expiring[0] and all(g[0] for g in grants)
    refusals = [
        acquire(conn, "hz-model", 10, key_aliases=["hz-a"], caller="notebook") for _ in range(7)
    ]
    assert not any(r[0] for r in refusals)
    conn.execute(
        'select public.commit_usage(%s, 812, 95, \'{"finish_reason": "STOP"}\')', (grants[0][1],)
    )
    conn.execute("select public.commit_usage(%s, 1013, 240)", (grants[1][1],))
    conn.execute("select public.release(%s, 'never sent', false)", (grants[2][1],))
    conn.execute("select public.release(%s, 'timeout', true)", (grants[3][1],))
    solo = acquire(conn, "hz-model", 50, key_aliases=["hz-solo"])
    conn.execute(
        "select public.report_rate_limit(%s, 'GenerateRequestsPerMinutePerProjectPerModel-FreeTier', 30000)",
        (solo[1],),
    )
    time.sleep(1.1)
    assert conn.execute(
        "select public.run_maintenance() -> 'details' ->> 'leases_expired'"
    ).fetchone() == ("1",)
    conn.execute("select public.disable_key('hz-b', 'API_KEY_INVALID')")
    return {"open": grants[4][1]}


@pytest.fixture
def upgraded(tmp_path: Path) -> Iterator[tuple[str, Rows, dict[str, object], dict[str, object]]]:
    url = create_database(template=None, prefix="upgrade12")
    try:
        localstack.bootstrap(url)
        first = push(url, migrations_before(tmp_path, HARDENING))
        assert HARDENING not in first
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            ids = fill(conn)
            before = all_rows(conn)
            seen = {
                "events": dict(conn.execute(EVENTS).fetchall()),
                "status": conn.execute(STATUS).fetchall(),
            }
        push(url, REPO)
        yield url, before, ids, seen
    finally:
        drop_database(url)


def test_upgrade_moves_per_call_audit_rows_and_loses_nothing(
    upgraded: tuple[str, Rows, dict[str, object], dict[str, object]],
    schema_files_url: str,
    tmp_path: Path,
) -> None:
    url, before, ids, seen = upgraded
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        after = all_rows(conn)
        assert_every_row_kept(before, after)
        # Every event as often as before: nothing lost, nothing shown twice.
        assert dict(conn.execute(EVENTS_COUNTED).fetchall()) == seen["events"]
        assert seen["events"]["granted"] == 10 and seen["events"]["refused"] == 7
        # The moved rows left the records; the rolled-up calls' rows stayed there.
        moved = conn.execute(
            "select count(*) from public.google_ai_reservations where details is not null"
        ).fetchone()
        assert moved == (7,)
        kept = conn.execute(
            "select count(*) from public.google_ai_audit_records "
            "where event in ('granted', 'committed')"
        ).fetchone()
        assert kept == (6,), "the rolled-up calls keep their audit rows"
        assert conn.execute(STATUS).fetchall() == seen["status"]
    assert_same_catalog(
        url, "the upgraded pre-hardening database", schema_files_url, tmp_path / "catalogs"
    )
    run_pgtap_on_a_clone(url)

    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        assert commit(conn, ids["open"], 900, 1) == "commit"
        conn.execute("update google_ai_internal.clock_switch set steerable = true")
        later = datetime.now(timezone.utc) + timedelta(days=40)
        conn.execute("select set_config('llm_limits.now', %s, false)", (later.isoformat(),))
        total = dict(conn.execute(EVENTS_ALL).fetchall())
        conn.execute("select public.run_maintenance()")
        assert dict(conn.execute(EVENTS_ALL).fetchall()) == {}
        counted = dict(
            conn.execute(
                "select event, sum(events)::int from public.google_ai_event_counts group by 1"
            ).fetchall()
        )
        assert counted == total, "every event of the upgraded database is counted in the rollup"
