"""Retention without losing count: every event that leaves the detail tables
is counted in google_ai_event_counts (and usage in google_ai_usage_counters),
and per-minute rollups are trimmed after rollup_retention while the per-day
ones keep the totals.

Also the refusal flood the Free tier cannot afford: 4 connections spinning
on NO_WAIT refusals for 10 s add at most 200 audit rows and 4 MB, and the
folded rows still count every refusal.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from tests.support import Conn, acquire, add_key, add_model, commit, set_now, settle, too_many

T0 = datetime(2026, 3, 1, 12, 0, 10, tzinfo=timezone.utc)


def maintain(conn: Conn) -> dict[str, Any]:
    row = conn.execute("select public.run_maintenance()").fetchone()
    assert row is not None
    return dict(row[0])


def event_counts(conn: Conn, model: str) -> dict[str, int]:
    rows = conn.execute(
        "select event, sum(events)::int from public.google_ai_event_counts "
        "where model = %s group by 1",
        (model,),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def stream_counts(conn: Conn, model: str) -> dict[str, int]:
    rows = conn.execute(
        "select event, sum(coalesce((details ->> 'count')::int, 1))::int "
        "from public.google_ai_audit_log where model = %s group by 1",
        (model,),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def test_every_event_is_counted_when_it_ages_out(db: Conn) -> None:
    set_now(db, T0)
    add_model(db, "m-ret", rpm=3, tpm=10_000, rpd=1000)
    add_key(db, "k1")
    grants = [acquire(db, "m-ret", 100, caller="bot") for _ in range(3)]
    refused = [acquire(db, "m-ret", 100, caller="bot") for _ in range(4)]
    assert all(g[0] for g in grants) and not any(r[0] for r in refused)
    commit(db, grants[0][1], 80, 5)
    settle(db, grants[1][1], transport_error="not_sent")
    settle(db, grants[2][1], 429, too_many("1s", "SomeQuota"))
    db.execute("update public.google_ai_model_limits set rpm = 4 where model = 'm-ret'")
    before = stream_counts(db, "m-ret")
    assert before == {
        "granted": 3,
        "refused": 4,
        "committed": 1,
        "released": 1,
        "rate_limited": 1,
        "config_changed": 2,
    }

    # Past every retention (ledger 7 d, audit 30 d): nothing of m-ret is left in detail...
    set_now(db, T0 + timedelta(days=31))
    details = maintain(db)["details"]
    assert details["ledger_rows_rolled_up"] == 3
    assert details["refusal_rows_deleted"] == 1
    assert stream_counts(db, "m-ret") == {}
    # ...and every event is counted, on the UTC day it happened.
    assert event_counts(db, "m-ret") == before
    days = db.execute(
        "select distinct day from public.google_ai_event_counts where model = 'm-ret'"
    ).fetchall()
    assert days == [(T0.date(),)]
    tokens = db.execute(
        "select tokens from public.google_ai_event_counts where model = 'm-ret' "
        "and event = 'granted'"
    ).fetchone()
    assert tokens == (80 + 0 + 100,), "granted tokens are what the grants finally counted"

    # A second pass adds nothing twice.
    maintain(db)
    assert event_counts(db, "m-ret") == before


def test_minute_rollups_trimmed_after_rollup_retention(db: Conn) -> None:
    set_now(db, T0)
    add_model(db, "m-min", rpm=100, tpm=10_000, rpd=1000)
    add_key(db, "k1")
    for _ in range(2):
        row = acquire(db, "m-min", 10)
        commit(db, row[1], 10)
    set_now(db, T0 + timedelta(days=8))
    maintain(db)
    kinds = "select bucket_kind, rpd_used from public.google_ai_usage_counters where model = 'm-min' order by 1"
    assert db.execute(kinds).fetchall() == [("day", 2), ("minute", 0)]
    set_now(db, T0 + timedelta(days=31))
    assert maintain(db)["details"]["minute_rollups_deleted"] == 1
    assert db.execute(kinds).fetchall() == [("day", 2)], "the day keeps the total"


def test_refusal_flood_folds(db: Conn, db_url: str) -> None:
    add_model(db, "m-flood", rpm=1, tpm=100_000, rpd=100_000)
    add_key(db, "k1")
    assert acquire(db, "m-flood", 1, caller="notebook")[0] is True
    db.execute("checkpoint")
    size0 = db.execute("select pg_database_size(current_database())").fetchone()
    rows0 = db.execute("select count(*) from public.google_ai_audit_log").fetchone()
    made = [0] * 4
    stop = time.monotonic() + 10

    def spin(i: int) -> None:
        with psycopg.connect(db_url, autocommit=True, prepare_threshold=None) as conn:
            while time.monotonic() < stop:
                row = conn.execute(
                    "select granted from public.acquire('m-flood', 1, caller => 'notebook')"
                ).fetchone()
                assert row == (False,)
                made[i] += 1

    threads = [threading.Thread(target=spin, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.execute("checkpoint")
    size1 = db.execute("select pg_database_size(current_database())").fetchone()
    rows1 = db.execute("select count(*) from public.google_ai_audit_log").fetchone()
    assert size0 and size1 and rows0 and rows1
    assert sum(made) > 1000, "the spin was too slow to prove anything"
    assert rows1[0] - rows0[0] <= 200
    assert size1[0] - size0[0] <= 4 * 1024 * 1024
    counted = db.execute(
        "select sum((details ->> 'count')::int) from public.google_ai_audit_log "
        "where event = 'refused' and model = 'm-flood'"
    ).fetchone()
    assert counted == (sum(made),), "every refusal is counted"
