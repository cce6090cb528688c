"""Fault: a caller is SIGKILLed between acquire and commit.

Injected: a separate Python process takes a grant and is killed with SIGKILL before it can
settle it, either while the fake Gemini server holds its request (``srv.hang``; the real client
and the real SDK over HTTP) or right after a bare ``select public.acquire(...)``. Nothing in the
process runs after the kill: no ``settle``, no ``finally``.

Observed (window 4 s + 100 ms guard, lease 1.5 s, gemma RPM 1 on the one key held):

* the kill lands 10-50 ms after the grant; the reservation stays ``reserved`` and counted
  (1 request, its estimate in tokens); a NO_WAIT acquire on the full window is refused ``rpm``
  with a ``retry_after_ms`` that ends when the killed grant's slot does (granted_at + 4.1 s,
  within the few ms the probe takes: e.g. 4043 ms in [4037, 4047]), and so is the real client
  (``RateLimited: rate limited (rpm; retry after 3.954s)``) without reaching the fake server;
* ``run_maintenance()`` before the lease ends leaves it alone; after it, it reports
  ``leases_expired: 1``, the row becomes ``expired`` with counted_requests 1, and an ``expired``
  audit row (``still_counted: true``) joins its ``granted`` row;
* an expired grant still fills its window: acquire is refused (retry_after ~2577 ms, again
  ending at granted_at + 4.1 s) and a ``generate`` right after that instant is granted and
  committed; the independent checker finds the ledger and audit log consistent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini
from tests.client.support import GEMMA, Conn, hold, set_gemma_limits, set_window
from tests.stress.checker import check

REPO = Path(__file__).resolve().parents[2]
WINDOW_MS, GUARD_MS, LEASE_MS = 4000, 100, 1500
HOLD = timedelta(milliseconds=WINDOW_MS + GUARD_MS)


def one(conn: Conn, sql: str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def db_now(conn: Conn) -> datetime:
    value: datetime = one(conn, "select clock_timestamp()")
    return value


def sleep_until(conn: Conn, instant: datetime) -> None:
    left = (instant - db_now(conn)).total_seconds()
    if left > 0:
        time.sleep(left + 0.02)


def refused_until(conn: Conn, free_at: datetime) -> int:
    """A NO_WAIT acquire on b1's full window: refused, and told exactly when it frees."""
    before = db_now(conn)
    granted, _, reason, retry_after_ms = one(
        conn,
        "select granted, reservation_id, reason, retry_after_ms from public.acquire("
        "model => %s, tokens => 10, mode => 'NO_WAIT', key_aliases => array['b1'], "
        "caller => 'probe')",
        (GEMMA,),
    )
    after = db_now(conn)
    assert (granted, reason) == (False, "rpm")
    # retry_after_ms was computed between `before` and `after`, rounded up to a millisecond.
    low = (free_at - after) / timedelta(milliseconds=1)
    high = (free_at - before) / timedelta(milliseconds=1) + 1
    assert low <= retry_after_ms <= high, (low, retry_after_ms, high)
    return int(retry_after_ms)


@pytest.mark.parametrize("mode", ["in-call", "after-acquire"])
def test_a_killed_caller_holds_its_slot_until_its_window_passes(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    db = keyed_db
    set_window(db, WINDOW_MS, GUARD_MS)
    set_gemma_limits(db, rpm=1, tpm=15000)
    db.execute("update public.google_ai_settings set lease_ms = %s", (LEASE_MS,))
    hold(monkeypatch, "b1")  # the child (and the probing client) hold one key: proj-b only
    if mode == "in-call":
        fake.hang(60.0)  # the request reaches "Google" and is never answered

    child = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.doomed_caller", mode, db_url, fake.base_url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        if mode == "in-call":
            while fake.stats().requests == 0:  # granted, and the request is at "Google"
                assert child.poll() is None, "the child exited before its request arrived"
                assert time.monotonic() < deadline, "the child's request never arrived"
                time.sleep(0.01)
        else:
            assert child.stdout is not None
            assert child.stdout.readline().strip(), "the child printed no reservation id"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL

    rid, status, requests, tokens, estimate, granted_at, lease_until = one(
        db,
        "select id, status, counted_requests, counted_tokens, estimated_tokens, granted_at, "
        "lease_until from public.google_ai_reservations",
    )
    assert (status, requests, tokens) == ("reserved", 1, estimate)
    assert lease_until == granted_at + timedelta(milliseconds=LEASE_MS)
    free_at = granted_at + HOLD
    assert db_now(db) < lease_until, "the kill came too late to look at the lease"

    # Counted while open: the SQL API and the real client are both refused until free_at.
    refused_until(db, free_at)
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        with pytest.raises(llm_limits.RateLimited) as refused:
            client.generate(GEMMA, "probe", mode="NO_WAIT")
        assert refused.value.reason == "rpm"
        assert refused.value.retry_after is not None
        assert 0 < refused.value.retry_after <= HOLD.total_seconds()
    assert fake.stats().requests == (1 if mode == "in-call" else 0)

    # Maintenance inside the lease leaves the reservation alone.
    assert one(db, "select public.run_maintenance()")["details"]["leases_expired"] == 0
    assert one(db, "select status from public.google_ai_reservations where id = %s", (rid,)) == (
        "reserved"
    )

    # After the lease: expired, audited, and still counted in its window.
    sleep_until(db, lease_until)
    assert db_now(db) < free_at, "the window must outlast the lease for this test"
    assert one(db, "select public.run_maintenance()")["details"]["leases_expired"] == 1
    status, requests, tokens, settled_at = one(
        db,
        "select status, counted_requests, counted_tokens, settled_at "
        "from public.google_ai_reservations where id = %s",
        (rid,),
    )
    assert (status, requests, tokens) == ("expired", 1, estimate)
    assert settled_at >= lease_until
    trail = db.execute(
        "select event, details ->> 'still_counted' from public.google_ai_audit_log "
        "where reservation_id = %s order by ts, id",
        (rid,),
    ).fetchall()
    assert trail == [("granted", None), ("expired", "true")]
    refused_until(db, free_at)
    assert one(db, "select public.run_maintenance()")["details"]["leases_expired"] == 0

    # Once its window has passed, the slot is free again.
    sleep_until(db, free_at)
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        assert client.generate(GEMMA, "after the window", mode="NO_WAIT").text
    statuses = db.execute(
        "select status, count(*) from public.google_ai_reservations group by 1 order by 1"
    ).fetchall()
    assert statuses == [("committed", 1), ("expired", 1)]

    report = check(db, timedelta(milliseconds=WINDOW_MS), lambda g, m, t: (1, 15000, 14400))
    report.assert_ok()
    assert report.max_requests == {("proj-b", GEMMA): 1}
