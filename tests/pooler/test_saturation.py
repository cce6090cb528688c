"""24 WAIT callers behind PgBouncer (transaction mode, pool 8) saturate one 30-RPM group.

Four processes of six threads, each its own Client holding key b1 only (so they share one
queue), call ``generate(mode="WAIT")`` back to back for 2.8 windows of 3 s, through the
pooler. Meanwhile a probe runs ``select 1`` every 0.5 s through the same pooler.

* every grant is within the limit: the ledger is re-checked by tests/stress/checker.py, and the
  fake Gemini server, which counts its own window, sees no request over it;
* the grants reach 95% of what the limit allows: rpm x (floor(T / window) + 1) over a run of
  length T that starts with an empty window;
* the queue keeps its order: a grant's place in line is when its wait began (grant time minus
  the database's waited_ms, which counts from the first call of the wait); no caller that
  queued is served after one that began its wait later, unless the window had room for both
  (then nobody ahead is delayed);
* the probe's `select 1` keeps getting through: waiters do not hold the pool's connections;
* no caller busy-polls: a few acquire calls per grant, not hundreds.

Timing figures (probe percentiles, grant lag, connections held) are reported by `make bench`
(bench/pooler.py); this test asserts the behaviour only.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.client import e2e_worker
from tests.client.support import GEMMA, KEYS, Conn, hold, insert_keys, projects, set_window
from tests.conftest import pooled
from tests.stress.checker import check

# The guard covers the time from a grant to the fake server's clock reading the request: up to
# a few hundred ms on a busy 2-core box with 24 callers and the server in this process.
WINDOW_MS, GUARD_MS = 3000, 300
RPM, TPM = 30, 15000
PROCESSES, THREADS = 4, 6
DURATION = 8.4  # three bursts: at 0, after one hold and after two, with 1.8 s to spare
# Callers that arrive together, before anyone queues, take the window row's lock in whatever
# order the lock manager grants it; waits that began this close count as simultaneous.
SAME_MOMENT = timedelta(milliseconds=50)
QUEUED_MS = 200  # a wait this long was refused and queued (lock contention alone is shorter)


class Probe(threading.Thread):
    """`select 1` every 0.5 s through the pooler; counts the answers.

    Against a pool that sleeping waiters hold, each would take seconds and few would come.
    """

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.answers = url, threading.Event(), 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
            while not self.stop.is_set():
                self.answers += conn.execute("select 1").fetchone() == (1,)
                self.stop.wait(0.5)


def test_24_waiters_saturate_a_group_through_a_pool_of_8(
    db: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pooled(db_url)
    hold(monkeypatch, "b1")  # the spawned callers inherit exactly this key
    insert_keys(db)
    set_window(db, WINDOW_MS, GUARD_MS)
    db.execute(
        "update public.google_ai_model_limits set rpm = %s, tpm = %s where model = %s",
        (RPM, TPM, GEMMA),
    )
    db.execute(
        "update public.google_ai_model_limits set rpm = 1000, rpd = 10000 where model = %s",
        (e2e_worker.WARM_UP_MODEL,),
    )
    limits = {
        "gemma-3-27b-it": Limits(rpm=RPM, tpm=TPM, rpd=14400),
        e2e_worker.WARM_UP_MODEL: Limits(rpm=1000, tpm=250_000, rpd=10000),
    }
    var, _, value = KEYS["b1"]
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    probe = Probe(url)

    with FakeGemini(projects(), limits, window=WINDOW_MS / 1000) as srv:
        procs = [
            ctx.Process(
                target=e2e_worker.run,
                args=(
                    f"proc-{i}",
                    url,
                    srv.base_url,
                    {var: value},
                    THREADS,
                    DURATION,
                    ready,
                    go,
                    start,
                    results,
                ),
            )  # fmt: skip
            for i in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=60)
            probe.start()
            start.value = time.time() + 0.3
            go.set()
            outcomes: list[e2e_worker.Outcome] = [
                results.get(timeout=DURATION + 120) for _ in procs
            ]
        finally:
            probe.stop.set()
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        probe.join(timeout=5)
        stats = srv.stats()

    assert [o.errors for o in outcomes] == [[]] * PROCESSES
    assert stats.rate_limited == 0, stats.summary()
    ok = sum(o.counts["ok"] for o in outcomes)
    allowed = RPM * (math.floor(DURATION * 1000 / WINDOW_MS) + 1)
    assert ok >= 0.95 * allowed, (ok, allowed)
    assert ok <= allowed

    report = check(db, timedelta(milliseconds=WINDOW_MS), lambda g, m, t: (RPM, TPM, 14400))
    report.assert_ok()
    assert report.max_requests[("proj-b", GEMMA)] == RPM

    # Queue order: a caller that queued is served before every one that began its wait later,
    # unless the window then had room for it and all those still waiting from before it (a
    # burst of freed slots is taken side by side: nobody ahead is delayed).
    waited = {rid: ms for o in outcomes for rid, ms in o.grants}
    rows = db.execute(
        "select id::text, granted_at from public.google_ai_reservations where model = %s "
        "and status = 'committed' order by granted_at",
        (GEMMA,),
    ).fetchall()
    assert len(rows) == ok == len(waited)
    hold_s = timedelta(milliseconds=WINDOW_MS + GUARD_MS)
    began = {rid: at - timedelta(milliseconds=waited[rid]) for rid, at in rows}
    for i, (rid, granted_at) in enumerate(rows):
        if waited[rid] < QUEUED_MS:
            continue
        passed = [r for r, _ in rows[i + 1 :] if began[r] < began[rid] - SAME_MOMENT]
        if passed:
            in_window = sum(1 for _, at in rows[: i + 1] if at > granted_at - hold_s)
            assert in_window + len(passed) <= RPM, (rid, granted_at, passed, in_window)
    assert max(waited.values()) >= WINDOW_MS / 2, "nobody queued: the limit never bound"

    # The pooler stayed responsive, and nobody polled.
    assert probe.answers >= 10  # of about 16 in 8.4 s
    calls = sum(o.statements.get("acquire", 0) for o in outcomes)
    assert calls <= 10 * ok, (calls, ok)
