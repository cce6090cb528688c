"""run_maintenance(): lease expiry, the ledger rollup, audit trimming, one log
row per run, mutual exclusion, and correctness while live traffic runs.

Time is steered with the session setting `llm_limits.now`, so "eight days
later" is one statement; only the live-traffic test runs on the real clock.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg

from tests.support import (
    Conn,
    acquire,
    add_key,
    add_model,
    commit,
    set_now,
    settle,
    sqlstate_of,
    too_many,
)

T0 = datetime(2026, 3, 1, 12, 0, 10, tzinfo=timezone.utc)


def maintain(conn: Conn) -> dict[str, Any]:
    row = conn.execute("select public.run_maintenance()").fetchone()
    assert row is not None
    return dict(row[0])


def scalar(conn: Conn, sql: str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def test_expired_leases_stay_counted_in_their_window(db: Conn) -> None:
    set_now(db, T0)
    db.execute("update public.google_ai_settings set lease_ms = 1000")
    add_model(db, "m-lease", rpm=2, tpm=1000, rpd=100)
    add_key(db, "k1")
    first, second = acquire(db, "m-lease", 10), acquire(db, "m-lease", 10)
    assert first[0] and second[0]

    set_now(db, T0 + timedelta(seconds=5))
    details = maintain(db)["details"]
    assert details["leases_expired"] == 2
    rows = db.execute(
        "select status, settled_at from public.google_ai_reservations order by granted_at"
    ).fetchall()
    assert rows == [("expired", T0 + timedelta(seconds=5))] * 2
    audit = db.execute(
        "select reservation_id, details ->> 'still_counted' from public.google_ai_audit_log "
        "where event = 'expired' order by reservation_id"
    ).fetchall()
    assert audit == sorted([(first[1], "true"), (second[1], "true")])

    # Still counted: the window (60 s + 1 s guard) is full until T0 + 61 s.
    refused = acquire(db, "m-lease", 10)
    assert refused[0] is False and refused[3] == "rpm" and refused[4] == 56_000
    assert maintain(db)["details"]["leases_expired"] == 0, "expired twice"

    # A late commit is accepted; a late unsent release refunds the slot.
    assert commit(db, first[1], 5, 1) == "commit"
    assert (
        scalar(
            db,
            "select details ->> 'late' from public.google_ai_audit_log "
            "where event = 'committed' and reservation_id = %s",
            (first[1],),
        )
        == "true"
    )
    assert settle(db, second[1], transport_error="not_sent") == "release_unsent"
    assert acquire(db, "m-lease", 10)[0] is True


def test_old_ledger_rows_roll_up_into_usage_counters(db: Conn) -> None:
    def at(delta: timedelta) -> None:
        set_now(db, T0 + delta)

    at(timedelta(0))
    add_model(db, "m-roll", rpm=100, tpm=100_000, rpd=1000)
    add_key(db, "k1", group="g")
    add_key(db, "k2", group="g")
    add_key(db, "k3")
    only = {"k1": ["k1"], "k3": ["k3"]}

    def grant(key: str, tokens: int) -> object:
        row = acquire(db, "m-roll", tokens, key_aliases=only[key])
        assert row[0] is True and row[2] == key
        return row[1]

    # Minute 12:00 (UTC): k1 commits 80, refunds an unsent call, keeps a sent one (30).
    commit(db, grant("k1", 100), 80, 9)
    settle(db, grant("k1", 50), transport_error="not_sent")
    at(timedelta(seconds=20))
    settle(db, grant("k1", 30), transport_error="cancelled")
    settle(db, grant("k3", 70), 429, too_many("1s"))
    # Minute 12:01.
    at(timedelta(seconds=55))
    commit(db, grant("k1", 10), 5, 1)
    commit(db, grant("k3", 20), 20, 1)
    # Three days later: inside the 7-day retention, must stay.
    at(timedelta(days=3))
    recent = grant("k1", 1)
    commit(db, recent, 1)

    at(timedelta(days=8))
    details = maintain(db)["details"]
    assert details["ledger_rows_rolled_up"] == 6
    # g was swept three days ago: kept; k3's window row is idle and its cooldown over.
    assert details["window_rows_dropped"] == 1
    assert db.execute("select id from public.google_ai_reservations").fetchall() == [(recent,)]

    minute = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    # The Pacific quota day 2026-03-01 starts at 08:00 UTC.
    day = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)

    def counters() -> set[tuple[Any, ...]]:
        return set(
            db.execute(
                "select c.bucket_kind, c.key_alias, c.bucket_start, c.rpm_used, c.tpm_used, "
                "c.rpd_used, c.api_key_id = k.id "
                "from public.google_ai_usage_counters as c "
                "left join public.google_ai_api_keys as k using (key_alias) "
                "where c.model = 'm-roll'"
            ).fetchall()
        )

    assert counters() == {
        ("minute", "k1", minute, 2, 110, 0, True),
        ("minute", "k3", minute, 1, 70, 0, True),
        ("minute", "k1", minute + timedelta(minutes=1), 1, 5, 0, True),
        ("minute", "k3", minute + timedelta(minutes=1), 1, 20, 0, True),
        ("day", "k1", day, 0, 115, 3, True),
        ("day", "k3", day, 0, 90, 2, True),
    }
    assert maintain(db)["details"]["ledger_rows_rolled_up"] == 0

    # A late row of an already rolled-up bucket (written directly: the clock
    # only moves forward) adds to it.
    db.execute(
        "insert into public.google_ai_reservations (key_alias, quota_group, model, api_model, "
        "status, estimated_tokens, counted_tokens, granted_at, rpd_day, lease_until) "
        "values ('k1', 'g', 'm-roll', 'm-roll', 'committed', 9, 7, %s, '2026-03-01', %s)",
        (T0 + timedelta(seconds=30), T0 + timedelta(minutes=10)),
    )
    assert maintain(db)["details"]["ledger_rows_rolled_up"] == 1
    got = counters()
    assert ("minute", "k1", minute, 3, 117, 0, True) in got
    assert ("day", "k1", day, 0, 122, 4, True) in got


def test_retention_floor_keeps_two_days_of_ledger(db: Conn) -> None:
    set_now(db, T0)
    add_model(db, "m-floor", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    db.execute("update public.google_ai_settings set ledger_retention = interval '1 hour'")
    commit(db, acquire(db, "m-floor", 1)[1], 1)
    set_now(db, T0 + timedelta(days=1, hours=23))
    assert maintain(db)["details"]["ledger_rows_rolled_up"] == 0
    set_now(db, T0 + timedelta(days=2, seconds=1))
    assert maintain(db)["details"]["ledger_rows_rolled_up"] == 1


def test_rollup_saturates_instead_of_wedging_maintenance(db: Conn) -> None:
    """Commits past 2^31-1 tokens in one bucket overflowed the integer rollup
    (22003), and every later run failed on the same rows."""
    set_now(db, T0)
    add_model(db, "m-big", rpm=10, tpm=None, rpd=100)
    add_key(db, "k1")
    for _ in range(3):  # the most settle reads from usageMetadata: 9 digits each
        assert commit(db, acquire(db, "m-big", 1)[1], 999_999_999) == "commit"
    set_now(db, T0 + timedelta(days=8))
    assert maintain(db)["details"]["ledger_rows_rolled_up"] == 3
    assert db.execute(
        "select bucket_kind, tpm_used, rpm_used + rpd_used from public.google_ai_usage_counters "
        "where model = 'm-big' order by 1"
    ).fetchall() == [("day", 2147483647, 3), ("minute", 2147483647, 3)]


def test_audit_and_maintenance_log_trimmed_past_audit_retention(db: Conn) -> None:
    set_now(db, T0)
    db.execute("update public.google_ai_settings set audit_retention = interval '1 day'")
    add_model(db, "m-audit", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    commit(db, acquire(db, "m-audit", 1)[1], 1)
    first_log = maintain(db)["id"]
    cutoff = T0 + timedelta(days=1)
    # The seed's rows carry the real deployment time; ours are steered to T0.
    # Grants and commits are the ledger's rows (kept for ledger_retention).
    count_old = "select count(*) from public.google_ai_audit_records where ts < %s"
    old_rows = scalar(db, count_old, (cutoff,))
    assert old_rows >= 3  # settings, model, key changes

    set_now(db, T0 + timedelta(days=2))
    acquire(db, "m-audit", 1)
    details = maintain(db)["details"]
    assert details["audit_rows_deleted"] == old_rows
    assert details["maintenance_rows_deleted"] == 1
    assert scalar(db, count_old, (cutoff,)) == 0
    assert (
        scalar(
            db,
            "select count(*) from public.google_ai_audit_log where ts = %s",
            (cutoff + timedelta(days=1),),
        )
        == 1
    ), "the new grant's row is kept"
    logs = db.execute("select id from public.google_ai_maintenance_log").fetchall()
    assert len(logs) == 1 and logs[0][0] != first_log
    # The trimming switch is transaction-local: the log is append-only again.
    assert sqlstate_of(lambda: db.execute("delete from public.google_ai_audit_log")) == "LL010"


def test_each_run_writes_exactly_one_log_row(db: Conn) -> None:
    before = scalar(db, "select count(*) from public.google_ai_maintenance_log")
    for run in range(1, 4):
        out = maintain(db)
        assert out["status"] == "ok" and out["operation"] == "run_maintenance"
        assert scalar(db, "select count(*) from public.google_ai_maintenance_log") == before + run
        logged = scalar(
            db,
            "select to_jsonb(m) from public.google_ai_maintenance_log as m where m.id = %s",
            (out["id"],),
        )
        assert logged == out


def test_concurrent_run_is_skipped_at_once(db: Conn, db_url: str) -> None:
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url, autocommit=True) as other:
        # `holder` is in a transaction after its run and keeps it open.
        assert scalar(holder, "select public.run_maintenance() ->> 'status'") == "ok"
        # A run that waited for the holder's lock would end in this timeout, not in a verdict.
        other.execute("set statement_timeout = '2s'")
        logs = scalar(other, "select count(*) from public.google_ai_maintenance_log")
        skipped = maintain(other)
        assert skipped["status"] == "skipped"
        assert scalar(other, "select count(*) from public.google_ai_maintenance_log") == logs
        holder.commit()
        assert maintain(other)["status"] == "ok"


def test_safe_with_live_traffic(db: Conn, db_url: str) -> None:
    """Maintenance loops (two runners) while four clients acquire and settle on
    the real clock; some reservations are abandoned so leases expire under
    load. Afterwards the running totals equal the ledger, nothing over-granted,
    and no client or runner saw an error or a deadlock."""
    db.execute(
        "update public.google_ai_settings set window_ms = 2000, window_guard_ms = 100, "
        "lease_ms = 1000"
    )
    add_model(db, "m-live", rpm=8, tpm=600, rpd=100_000)
    add_key(db, "l1", group="lg1")
    add_key(db, "l2", group="lg1")
    add_key(db, "l3", group="lg2")
    deadlocks = scalar(
        db, "select deadlocks from pg_stat_database where datname = current_database()"
    )
    # The load lasts 2.5 s and, on a loaded machine, until a lease has expired under it.
    start = time.monotonic()
    expired_under_load = threading.Event()

    def going() -> bool:
        elapsed = time.monotonic() - start
        return elapsed < 2.5 or (not expired_under_load.is_set() and elapsed < 20)

    errors: list[Exception] = []
    runs: dict[str, int] = {"ok": 0, "skipped": 0}
    lock = threading.Lock()

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        abandoned: list[object] = []
        try:
            with psycopg.connect(db_url, autocommit=True, prepare_threshold=None) as conn:
                while going():
                    granted, rid, *_ = acquire(conn, "m-live", rnd.randint(1, 90))
                    if not granted:
                        time.sleep(0.01)
                        continue
                    roll = rnd.random()
                    if roll < 0.45:
                        commit(conn, rid, rnd.randint(0, 1), 3)
                    elif roll < 0.65:
                        gone = rnd.choice(("not_sent", "cancelled"))
                        settle(conn, rid, transport_error=gone)
                    elif roll < 0.7:
                        settle(conn, rid, 429, too_many("0.05s"))
                    else:
                        abandoned.append(rid)
                    if abandoned and rnd.random() < 0.2:
                        # Late settlement of a reservation the lease may have expired.
                        settle(conn, abandoned.pop(0), transport_error="cancelled")
        except Exception as exc:  # reported by the main thread
            with lock:
                errors.append(exc)

    def runner() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                while going():
                    result = maintain(conn)
                    if (result.get("details") or {}).get("leases_expired"):
                        expired_under_load.set()
                    with lock:
                        runs[result["status"]] += 1
                    time.sleep(0.02)
        except Exception as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert runs["ok"] > 10, runs
    # Leases expired under load (their audit rows stay; a late settle may take the row on).
    assert (
        scalar(db, "select count(*) from public.google_ai_audit_records where event = 'expired'")
        > 0
    )

    # The running totals are exactly what the ledger says about their window.
    drift = db.execute(
        "select s.quota_group, s.window_requests, s.window_tokens, s.day_requests, "
        "  (select coalesce(sum(r.counted_requests), 0) from public.google_ai_reservations as r "
        "   where r.quota_group = s.quota_group and r.model = s.model and r.granted_at > s.swept_to), "
        "  (select coalesce(sum(r.counted_tokens), 0) from public.google_ai_reservations as r "
        "   where r.quota_group = s.quota_group and r.model = s.model and r.granted_at > s.swept_to), "
        "  (select coalesce(sum(r.counted_requests), 0) from public.google_ai_reservations as r "
        "   where r.quota_group = s.quota_group and r.model = s.model and r.rpd_day = s.rpd_day) "
        "from public.google_ai_quota_state as s where s.model = 'm-live'"
    ).fetchall()
    assert len(drift) == 2
    for group, requests, tokens, day, want_requests, want_tokens, want_day in drift:
        assert (requests, tokens, day) == (want_requests, want_tokens, want_day), group

    # Exactly-one bookkeeping: one `expired` audit row per expired lease.
    assert (
        db.execute(
            "select r.id from public.google_ai_reservations as r "
            "where r.settled_at is not null and r.status <> 'reserved' and ("
            "  select count(*) from public.google_ai_audit_log as a "
            "  where a.reservation_id = r.id and a.event = 'expired') > 1"
        ).fetchall()
        == []
    )
    assert (
        scalar(db, "select deadlocks from pg_stat_database where datname = current_database()")
        == deadlocks
    )
    # Never over-granted: every sliding window (2.1 s) of the ledger within RPM.
    worst = scalar(
        db,
        "select max(n) from (select (select sum(b.counted_requests) "
        "  from public.google_ai_reservations as b where b.quota_group = a.quota_group "
        "  and b.model = a.model and b.granted_at > a.granted_at - interval '2.1 s' "
        "  and b.granted_at <= a.granted_at) as n "
        "from public.google_ai_reservations as a where a.model = 'm-live') as w",
    )
    assert worst <= 8


def test_quota_day_of_rollup_is_pacific(db: Conn) -> None:
    """A grant at 07:30 UTC belongs to the previous Pacific day's bucket."""
    early = datetime(2026, 3, 1, 7, 30, tzinfo=timezone.utc)
    set_now(db, early)
    add_model(db, "m-tz", rpm=10, tpm=1000, rpd=100)
    add_key(db, "k1")
    commit(db, acquire(db, "m-tz", 3)[1], 3)
    set_now(db, early + timedelta(days=8))
    maintain(db)
    start = scalar(
        db,
        "select bucket_start from public.google_ai_usage_counters "
        "where model = 'm-tz' and bucket_kind = 'day'",
    )
    assert start == datetime(2026, 2, 28, 8, 0, tzinfo=timezone.utc)
    assert start.astimezone(timezone(timedelta(hours=-8))).date() == date(2026, 2, 28)


def test_settling_after_the_window_row_is_gone_keeps_totals_exact(db: Conn) -> None:
    """google_ai_quota_state is derived data (maintenance drops idle rows, an
    operator may truncate it); a settlement that finds its window row missing
    rebuilds it. The rebuild used to apply the settlement's delta twice: a
    commit of 40 against an estimate of 100 left window_tokens at -20."""
    set_now(db, T0)
    add_model(db, "m-gone", rpm=5, tpm=1000, rpd=100)
    add_key(db, "k1")
    committed, released, sent = (acquire(db, "m-gone", 100)[1] for _ in range(3))

    def totals() -> tuple[Any, ...]:
        row = db.execute(
            "select window_requests, window_tokens, day_requests "
            "from public.google_ai_quota_state where model = 'm-gone'"
        ).fetchone()
        assert row is not None
        return tuple(row)

    db.execute("truncate public.google_ai_quota_state")
    commit(db, committed, 40, 1)
    assert totals() == (3, 240, 3)
    db.execute("truncate public.google_ai_quota_state")
    settle(db, released, transport_error="not_sent")
    assert totals() == (2, 140, 2)
    db.execute("truncate public.google_ai_quota_state")
    settle(db, sent, transport_error="cancelled")  # sent: changes no count
    # The next acquire rebuilds the row from the ledger and agrees: 3 more requests fit the RPM of 5, not 4.
    assert [acquire(db, "m-gone", 1)[0] for _ in range(4)] == [True, True, True, False]
