"""Waiters SIGKILLed while they wait in line, through PgBouncer: their places expire.

Four caller processes (A, B, C, D, in that order) wait through the pooler, with the real client,
for key b1's only slot (RPM 1, window 8 s + 100 ms guard), which another caller holds. A (the
head, waiting inside its slice) and B (asleep in the client until its turn) are SIGKILLed. Nothing
of theirs runs afterwards. Their tickets must stop holding the line within a few seconds: C is
served a few seconds after the slot frees, D a window after C, and no ticket is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from llm_limits.local.fake_gemini import FakeGemini
from tests.client.support import GEMMA, Conn, hold, set_gemma_limits, set_window
from tests.conftest import pooled
from tests.stress.checker import check

REPO = Path(__file__).resolve().parents[2]
# 8 s: four processes take their places before the kill, on a machine busy with other tests.
WINDOW_MS, GUARD_MS = 8000, 100
HOLD = timedelta(milliseconds=WINDOW_MS + GUARD_MS)


def one(conn: Conn, sql: str, params: tuple[object, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def tickets(conn: Conn) -> int:
    return int(one(conn, "select count(*) from google_ai_internal.wait_tickets"))


def test_killed_waiters_stop_holding_the_line(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = keyed_db
    url = pooled(db_url)
    set_window(db, WINDOW_MS, GUARD_MS)
    set_gemma_limits(db, rpm=1, tpm=15000)
    hold(monkeypatch, "b1")
    callers: dict[str, subprocess.Popen[str]] = {}
    try:
        for name in "ABCD":
            callers[name] = subprocess.Popen(
                [sys.executable, "-m", "tests.pooler.doomed_waiter", url, fake.base_url, name],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        for proc in callers.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        blocker = one(
            db,
            "select reservation_id from public.acquire(model => %s, tokens => 10, "
            "key_aliases => array['b1'], caller => 'blocker')",
            (GEMMA,),
        )
        blocked_at = one(
            db, "select granted_at from public.google_ai_reservations where id = %s", (blocker,)
        )
        free_at = blocked_at + HOLD
        for queued, proc in enumerate(callers.values(), start=1):
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 10
            while tickets(db) < queued:  # in line, in this order
                assert time.monotonic() < deadline, "a caller never took its place in line"
                time.sleep(0.01)
        # A killed caller's backend only notices when it answers: its call runs out its
        # slice (2 s). Kill early enough that the slot is still taken by then.
        assert one(db, "select clock_timestamp()") < free_at - timedelta(seconds=2.5)
        for name in "AB":
            os.kill(callers[name].pid, signal.SIGKILL)
        outputs = {name: callers[name].communicate(timeout=30)[0].strip() for name in "CD"}
    finally:
        for proc in callers.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    assert [callers[name].returncode for name in "AB"] == [-signal.SIGKILL] * 2
    assert outputs == {"C": "granted", "D": "granted"}
    rows = db.execute(
        "select caller, granted_at, status from public.google_ai_reservations order by granted_at"
    ).fetchall()
    assert [(caller, status) for caller, _, status in rows] == [
        ("blocker", "reserved"),
        ("C", "committed"),
        ("D", "committed"),
    ]
    granted = {caller: at for caller, at, _ in rows}
    # The dead head's place expired and the line moved on a few seconds after the slot freed.
    assert granted["C"] - free_at <= timedelta(seconds=5), granted["C"] - free_at
    assert granted["D"] >= granted["C"] + HOLD
    assert granted["D"] - (granted["C"] + HOLD) <= timedelta(seconds=5)
    assert fake.stats().requests == 2

    deadline = time.monotonic() + 10
    while one(db, "select google_ai_internal.queue_waiters(%s)", (GEMMA,)) != 0:
        assert time.monotonic() < deadline, "the killed waiters' places never expired"
        time.sleep(0.1)
    check(db, timedelta(milliseconds=WINDOW_MS), lambda g, m, t: (1, 15000, 14400)).assert_ok()
