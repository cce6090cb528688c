"""Stress proof: many processes x threads, each with its own connection,
hammer every RPC for several windows; the independent checker (checker.py)
then re-derives every window from the ledger and the audit log.

CI size: 3 processes x 4 threads over ~4 windows of 2 s. Larger by flag:
`pytest tests/stress --run-slow` runs 4 x 8 over 60 s windows for 150 s
(`STRESS_PROCESSES`, `STRESS_THREADS`, `STRESS_SECONDS` override).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import psycopg
import pytest

from tests.stress.checker import check
from tests.support import acquire, commit, settle, too_many

# (group, model) limits: two models, four groups, one paid-tier override.
MODELS = {"stress-a": (20, 2000, 100000), "stress-b": (8, 50000, 100000)}
KEYS = [  # alias, group
    ("sa1", "proj-shared"),
    ("sa2", "proj-shared"),
    ("sa3", "proj-shared"),
    ("sb1", "proj-b"),
    ("sc1", None),  # its own group
    ("sp1", "proj-paid"),
]
OVERRIDES = {("proj-paid", "stress-a"): (40, 4000, 100000)}
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"


def limits_at(change: tuple[datetime, int] | None):  # type: ignore[no-untyped-def]
    def limits(group: str, model: str, t: datetime) -> tuple[int, int, int]:
        rpm, tpm, rpd = OVERRIDES.get((group, model), MODELS[model])
        if change and model == "stress-a" and (group, model) not in OVERRIDES and t >= change[0]:
            rpm = change[1]
        return rpm, tpm, rpd

    return limits


def setup(db: psycopg.Connection[tuple[object, ...]], window_ms: int, guard_ms: int) -> None:
    db.execute(
        "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
        (window_ms, guard_ms),
    )
    for model, (rpm, tpm, rpd) in MODELS.items():
        db.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
            "values (%s, %s, %s, %s, %s)",
            (model, model + "-api", rpm, tpm, rpd),
        )
    for alias, group in KEYS:
        db.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values (%s, %s, %s)",
            (alias, alias.upper(), group),
        )
    for (group, model), (rpm, tpm, rpd) in OVERRIDES.items():
        db.execute(
            "insert into public.google_ai_group_limits (quota_group, model, rpm, tpm, rpd) "
            "values (%s, %s, %s, %s, %s)",
            (group, model, rpm, tpm, rpd),
        )


def caller(url: str, seed: int, stop: float, counts: Counter[str], lock: threading.Lock) -> None:
    rnd = random.Random(seed)
    aliases = [a for a, _ in KEYS]
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        while time.monotonic() < stop:
            model = rnd.choice(list(MODELS))
            held = rnd.sample(aliases, rnd.randint(1, 3)) if rnd.random() < 0.7 else None
            mode = rnd.choice(["WAIT", "NO_WAIT"])
            estimate = rnd.randint(20, 400)
            granted, rid, _, reason, _ = acquire(
                conn, model, estimate, mode=mode, max_wait_ms=rnd.choice([0, 200, 800]),
                key_aliases=held, caller="stress",
            )  # fmt: skip
            with lock:
                counts["granted" if granted else "refused"] += 1
            if not granted:
                time.sleep(rnd.uniform(0, 0.03))
                continue
            time.sleep(rnd.uniform(0, 0.02))  # "the call to Google"
            roll = rnd.random()
            if roll < 0.55:
                # Actual below the estimate mostly; sometimes above it.
                actual = rnd.randint(0, estimate) if rnd.random() < 0.85 else estimate + 30
                commit(conn, rid, actual, 12)
                if rnd.random() < 0.1:  # a retried commit is a no-op
                    commit(conn, rid, actual, 12)
            elif roll < 0.7:
                settle(conn, rid, transport_error="not_sent")
            elif roll < 0.85:
                # Sent and kept counted; unlike a timeout it counts towards no outage.
                settle(conn, rid, transport_error="cancelled")
            elif roll < 0.9:
                settle(conn, rid, 429, too_many("0.15s", PER_MINUTE))
            else:
                pass  # left open: the lease will expire it


def process_main(url: str, seed: int, threads: int, seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    workers = [
        threading.Thread(target=caller, args=(url, seed * 100 + i, stop, counts, lock))
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(dict(counts))


def run_load(url: str, processes: int, threads: int, seconds: float) -> Counter[str]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=process_main, args=(url, p, threads, seconds, out))
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    total: Counter[str] = Counter()
    for _ in procs:
        total.update(out.get(timeout=seconds + 120))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return total


def deadlocks(db: psycopg.Connection[tuple[object, ...]]) -> int:
    row = db.execute(
        "select deadlocks from pg_stat_database where datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else -1


def scale(slow: bool) -> tuple[int, int, float, int, int]:
    if slow:
        return (
            int(os.environ.get("STRESS_PROCESSES", 4)),
            int(os.environ.get("STRESS_THREADS", 8)),
            float(os.environ.get("STRESS_SECONDS", 150)),
            60000,
            1000,
        )
    return 3, 4, 8.0, 2000, 100


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_stress_never_over_grants(
    db: psycopg.Connection[tuple[object, ...]], db_url: str, slow: bool
) -> None:
    processes, threads, seconds, window_ms, guard_ms = scale(slow)
    setup(db, window_ms, guard_ms)
    before = deadlocks(db)
    counts = run_load(db_url, processes, threads, seconds)
    report = check(db, timedelta(milliseconds=window_ms), limits_at(None))
    report.assert_ok()
    assert report.grants == counts["granted"] > 0
    audited = db.execute(
        "select count(*) filter (where event = 'granted'), "
        "  coalesce(sum(coalesce((details ->> 'count')::int, 1)) filter (where event = 'refused'), 0) "
        "from public.google_ai_audit_log where details ->> 'caller' = 'stress'"
    ).fetchone()
    assert audited == (counts["granted"], counts["refused"]), "a grant or refusal went unaudited"
    assert counts["refused"] > 0, "the limits never bound: the load is too light to prove anything"
    # The limits were actually reached somewhere, not just respected.
    assert max(report.max_requests.values()) >= min(m[0] for m in MODELS.values())
    assert deadlocks(db) == before


def test_lowering_a_limit_under_load(
    db: psycopg.Connection[tuple[object, ...]], db_url: str
) -> None:
    """Lower stress-a's RPM from 20 to 5 in the middle of the load.

    What happens: grants already in the window stay counted (they may have
    reached Google), and no new grant is made until the window holds fewer
    than 5. So every grant made after the change ends a window of at most 5,
    old grants included. (An acquire that read the old limit just before the
    change commits may still finish right after it: 100 ms of grace.)
    """
    window_ms, guard_ms = 2000, 100
    setup(db, window_ms, guard_ms)
    holder: dict[str, Counter[str]] = {}
    loader = threading.Thread(
        target=lambda: holder.setdefault("counts", run_load(db_url, 2, 4, 6.0))
    )
    loader.start()
    time.sleep(3.0)
    db.execute("update public.google_ai_model_limits set rpm = 5 where model = 'stress-a'")
    changed = db.execute("select clock_timestamp()").fetchone()
    loader.join()
    assert changed is not None and holder["counts"]["granted"] > 0
    settled_at: datetime = changed[0] + timedelta(milliseconds=100)  # type: ignore[operator]

    # The whole run still satisfies the limits in force at each moment ...
    report = check(db, timedelta(milliseconds=window_ms), limits_at((settled_at, 5)))
    report.assert_ok()
    # ... and the groups on the lowered limit did get grants after the change,
    # each ending a window of at most 5.
    after = db.execute(
        "select count(*) from public.google_ai_reservations "
        "where model = 'stress-a' and quota_group <> 'proj-paid' and granted_at > %s",
        (settled_at,),
    ).fetchone()
    assert after is not None and after[0] > 0
