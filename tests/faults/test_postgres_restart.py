"""Fault: PostgreSQL restarts (or crashes) in the middle of a multi-process load.

Injected: a cluster of this module's own (``localstack.up`` in a temporary directory, the
migrations deployed with ``supabase db push``; the shared test cluster is never touched) serves
3 spawned processes x 2 threads, each looping ``client.generate(..., mode="WAIT",
max_wait=5)`` through the real SDK against one FakeGemini (2 projects, gemma RPM 8, window 2 s
in both the database and the fake, guard 300 ms, 150 ms per call). 2.5 s into the run (which
goes on for 4.5 s once the server is back):

* ``fast``: ``pg_ctl restart -m fast`` (options reused from postmaster.opts): every backend is
  terminated (57P01), including acquires sleeping in WAIT; the server is back in ~0.2-0.3 s;
* ``crash``: ``pg_ctl stop -m immediate`` (no checkpoint: a crash), 1 s with nothing listening,
  then a start on the same port and crash recovery from the WAL (~1.5 s away in all).

Asserted: the restart happened (postmaster start time, server log); callers saw only
``DatabaseUnavailable`` and every process got grants again after the restart; the independent
checker finds no over-grant and every ledger row with exactly one ``granted`` audit row (and no
``granted`` row without its ledger row); every reservation a client saw committed (the
``on_usage`` hook) is ``committed`` in the ledger with one ``token_usage`` row; the fake server
answered no 429 and saw no more gemma calls per project than the ledger counts.

Observed (typical runs on 2 cores; the load is bound by the limits, so the counts repeat):

* fast: 6 backends terminated; 70 answers, 66 committed, 36-40 of them after the restart
  (every process 11-16); 10-30 ``DatabaseUnavailable`` while the server was away, none after;
  4 answers whose ``settle`` fell into the outage (``settle failed; the grant stays
  counted``): their rows stay ``reserved`` and counted at the estimate, have no
  ``token_usage`` row and never reached ``on_usage``; 0 429s;
* crash: 70 answers, 66 committed, ~38 after the restart, the same 4 lost commits, 150-250
  ``DatabaseUnavailable`` (connections refused at once; the loop sleeps 50 ms), none after the
  restart; 0 429s; no acknowledged commit was lost by the crash. With two CPU hogs running
  beside it the outage grew to 4.1 s: 50 answers, 351 DatabaseUnavailable, still 0 429s;
* crash-long (``--run-slow``, 15 s + outage + 25 s): 322 answers, 316 committed, 198 after
  the restart, 6 lost commits, 0 429s.

Run with ``-s`` to see the numbers of a run.
"""

from __future__ import annotations

import multiprocessing
import shlex
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llm_limits.testing import localstack
from llm_limits.testing.fake_gemini import FakeGemini, Limits
from tests.client.support import KEYS, insert_keys, projects, set_gemma_limits, set_window
from tests.stress.checker import check

from . import restart_worker

REPO = Path(__file__).resolve().parents[2]
# The guard covers the lag from grant to arrival at the fake, as in the e2e test: around a
# restart, on 2 busy cores, a granted request can take more than 100 ms to arrive.
WINDOW_MS, GUARD_MS = 2000, 300
RPM = 8
THREADS = 2
MAX_WAIT = 5.0
PG_CTL = str(localstack.PG_BIN / "pg_ctl")


@pytest.fixture(scope="module")
def cluster() -> Iterator[localstack.LocalCluster]:
    # Not pytest's tmp_path: the server runs as `postgres`, which must reach the directory.
    root = Path(tempfile.mkdtemp(prefix="llt-faults-"))
    root.chmod(0o755)
    try:
        yield localstack.up(root / "pg")
    finally:
        localstack.down(root / "pg", remove=True)
        shutil.rmtree(root, ignore_errors=True)


def server_options(cluster: localstack.LocalCluster) -> str:
    """The options the server was started with (port, socket dir...), for a start by hand."""
    argv = shlex.split((cluster.data / "postmaster.opts").read_text())[1:]
    if "-D" in argv:
        i = argv.index("-D")
        del argv[i : i + 2]
    return shlex.join(argv)


def restart(cluster: localstack.LocalCluster, how: str) -> None:
    data, log = str(cluster.data), str(cluster.log)
    if how == "fast":
        cmd = [PG_CTL, "restart", "-w", "-t", "60", "-D", data, "-l", log, "-m", "fast"]
        localstack._as_postgres(cmd, check=True)
        return
    options = server_options(cluster)
    localstack._as_postgres([PG_CTL, "stop", "-w", "-D", data, "-m", "immediate"], check=True)
    time.sleep(1.0)  # nothing listens on the port: connects are refused
    start = [PG_CTL, "start", "-w", "-t", "60", "-D", data, "-l", log, "-o", options]
    localstack._as_postgres(start, check=True)


def worker_envs() -> dict[str, dict[str, str]]:
    var = {alias: spec[0] for alias, spec in KEYS.items()}
    value = {alias: spec[2] for alias, spec in KEYS.items()}
    return {
        "proc-a1-b1": {var["a1"]: value["a1"], var["b1"]: value["b1"]},
        "proc-a2-b1": {var["a2"]: value["a2"], var["b1"]: value["b1"]},
        "proc-all": {var[a]: value[a] for a in KEYS},
    }


def deploy(cluster: localstack.LocalCluster) -> str:
    url = localstack.create_database(cluster, f"faults_{uuid.uuid4().hex[:8]}")
    localstack.push(url, REPO)
    with psycopg.connect(url, autocommit=True) as conn:
        insert_keys(conn)
        set_window(conn, WINDOW_MS, GUARD_MS)
        set_gemma_limits(conn, rpm=RPM, tpm=15000)
        conn.execute(
            "update public.google_ai_model_limits set rpm = 1000, rpd = 10000 where model = %s",
            (restart_worker.WARM_UP_MODEL,),
        )
    return url


@pytest.mark.parametrize(
    ("how", "restart_at", "run_on"),
    [
        pytest.param("fast", 2.5, 4.5, id="fast"),
        pytest.param("crash", 2.5, 4.5, id="crash"),
        pytest.param("crash", 15.0, 25.0, id="crash-long", marks=pytest.mark.slow),
    ],
)
def test_clients_ride_through_a_postgres_restart(
    cluster: localstack.LocalCluster,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    restart_at: float,
    run_on: float,
) -> None:
    for var, _, _ in KEYS.values():  # each worker sets its own
        monkeypatch.delenv(var, raising=False)
    url = deploy(cluster)
    limits = {
        "gemma-3-27b-it": Limits(rpm=RPM, tpm=15000, rpd=14400),
        restart_worker.WARM_UP_MODEL: Limits(rpm=1000, tpm=250_000, rpd=10000),
    }
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    stop = ctx.Value("d", time.time() + 600)  # until the server is back, then run_on seconds
    log_offset = cluster.log.stat().st_size

    with FakeGemini(projects(), limits, latency=0.15, window=WINDOW_MS / 1000) as srv:
        procs = [
            ctx.Process(
                target=restart_worker.run,
                args=(
                    name,
                    url,
                    srv.base_url,
                    env,
                    THREADS,
                    MAX_WAIT,
                    ready,
                    go,
                    start,
                    stop,
                    results,
                ),
            )
            for name, env in worker_envs().items()
        ]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=60)
            start.value = time.time() + 0.2
            go.set()
            time.sleep(max(0.0, start.value + restart_at - time.time()))
            began = time.time()
            restart(cluster, how)
            back = time.time()
            stop.value = back + run_on
            outcomes = [results.get(timeout=run_on + 60) for _ in procs]
        finally:
            stop.value = min(stop.value, time.time() + run_on)  # also when the restart failed
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        stats = srv.stats()

    server_log = cluster.log.read_text(errors="replace")[log_offset:]
    with psycopg.connect(url, autocommit=True) as conn:
        started_at = conn.execute("select extract(epoch from pg_postmaster_start_time())")
        postmaster_start = float(started_at.fetchone()[0])  # type: ignore[index]
        report = check(conn, timedelta(milliseconds=WINDOW_MS), lambda g, m, t: (RPM, 15000, 14400))
        ledger: dict[str, str] = dict(
            conn.execute(
                "select id::text, status from public.google_ai_reservations "
                "where model = 'gemma-3-27b'"
            ).fetchall()
        )
        usage_rows = Counter(
            str(r[0])
            for r in conn.execute("select meta ->> 'reservation_id' from public.token_usage")
        )
        counted: dict[str, int] = dict(
            conn.execute(
                "select quota_group, sum(counted_requests) from public.google_ai_reservations "
                "where model = 'gemma-3-27b' group by 1"
            ).fetchall()
        )
        orphans = conn.execute(
            "select count(*) from public.google_ai_audit_log as a where a.event = 'granted' "
            "and not exists (select from public.google_ai_reservations as r "
            "where r.id = a.reservation_id)"
        ).fetchone()

    committed = [rid for o in outcomes for rid, _ in o["committed"]]
    after = {o["name"]: sum(t > back for _, t in o["committed"]) for o in outcomes}
    returned = sum(len(o["returned"]) for o in outcomes)
    failures = Counter(kind for o in outcomes for kind, _, _ in o["failures"])
    failed_after = Counter(kind for o in outcomes for kind, t, _ in o["failures"] if t > back)
    warnings = Counter(what for o in outcomes for what, _ in o["warnings"])
    warned_after = Counter(what for o in outcomes for what, t in o["warnings"] if t > back)
    statuses = Counter(ledger.values())
    print(  # the observed numbers, for `pytest -s`
        f"\n[{how}] server away {back - began:.2f}s, backends terminated "
        f"{server_log.count('terminating connection due to')}; answers {returned}, "
        f"committed {len(committed)}, committed after the restart {after}; "
        f"client errors {dict(failures)} ({dict(failed_after)} after the restart); "
        f"client warnings {dict(warnings)} ({dict(warned_after)} after the restart); "
        f"ledger {dict(statuses)}; fake {stats.summary()}"
    )

    assert [o["unexpected"] for o in outcomes] == [[]] * len(procs)
    # The fault happened.
    assert began <= postmaster_start <= back + 1, "the server was not restarted"
    if how == "crash":
        assert "automatic recovery in progress" in server_log
    else:
        assert "terminating connection due to administrator command" in server_log
    # Only the database's own trouble reached the callers, and they went on afterwards.
    assert set(failures) <= {"DatabaseUnavailable"}, failures
    assert all(n > 0 for n in after.values()), after
    # No over-grant; every ledger row has exactly one `granted` audit row, and vice versa.
    report.assert_ok()
    assert orphans == (0,)
    # No committed usage lost: every commit a client saw is in the ledger and in token_usage,
    # and every committed ledger row has its token_usage row.
    assert len(committed) == len(set(committed))
    lost = [rid for rid in committed if ledger.get(rid) != "committed" or usage_rows[rid] != 1]
    assert not lost, f"{len(lost)} commits lost, e.g. {lost[:3]}"
    assert all(usage_rows[rid] == 1 for rid, st in ledger.items() if st == "committed")
    # An answer whose commit failed during the outage keeps its grant open and counted.
    assert statuses["reserved"] >= warnings["settle failed"]
    assert set(statuses) <= {"committed", "reserved"}, statuses
    # The fake server never had to refuse, and saw no call the ledger does not count.
    assert stats.rate_limited == 0, stats.summary()
    gemma = {p: len(g) for (p, m), g in stats.grants.items() if m.startswith("gemma")}
    assert sum(gemma.values()) == returned
    assert all(n <= counted.get(p, 0) for p, n in gemma.items()), (gemma, counted)
