"""32 real connections hammer one quota group; the ledger must never show an
over-grant, and Postgres must never report a deadlock.

The window is shortened (2 s + 100 ms guard) so the run spans several windows
in seconds. The run is repeated through PgBouncer in transaction mode (pool of 8): 32 clients
on 8 server connections, each WAIT lasting one call. The check at the end reads the ledger only and re-derives every
sliding window itself; it shares no code with the SQL it checks.
"""

from __future__ import annotations

import random
import threading
import time
from bisect import bisect_left
from collections import Counter
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import pooled

WINDOW = timedelta(milliseconds=2000)
RPM, TPM, RPD = 12, 900, 400
WORKERS = 32
DURATION_S = 7.0


def max_in_sliding_window(events: list[tuple[datetime, int]], width: timedelta) -> int:
    """Largest sum of weights over any half-open window (t - width, t]."""
    events = sorted(events)
    times = [t for t, _ in events]
    best, prefix = 0, [0]
    for _, w in events:
        prefix.append(prefix[-1] + w)
    for i, (t, _) in enumerate(events):
        start = bisect_left(times, t - width)
        # events exactly at t - width are outside the window (t - width, t]
        while start < len(times) and times[start] <= t - width:
            start += 1
        best = max(best, prefix[i + 1] - prefix[start])
    return best


def worker(url: str, seed: int, stop: float, outcomes: Counter[str], lock: threading.Lock) -> None:
    rnd = random.Random(seed)
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        while time.monotonic() < stop:
            mode = rnd.choice(["NO_WAIT", "WAIT"])
            tokens = rnd.randint(10, 120)
            ticket = None
            while True:  # the one waiting rule: while queued, sleep as told, call again
                row = conn.execute(
                    "select granted, reservation_id, reason, retry_after_ms, ticket"
                    " from public.acquire(model => 'conc-model', tokens => %s::int,"
                    " mode => %s::text, max_wait_ms => %s::int, key_aliases => null,"
                    " caller => 'conc', ticket => %s::uuid)",
                    (tokens, mode, 300 if mode == "WAIT" else 0, ticket),
                ).fetchone()
                assert row is not None
                granted, rid, reason, retry_after_ms, ticket = row
                if reason != "queued":
                    break
                time.sleep(retry_after_ms / 1000)
            with lock:
                outcomes["granted" if granted else f"refused:{reason}"] += 1
            if not granted:
                time.sleep(rnd.uniform(0.0, 0.05))
                continue
            action = rnd.random()
            if action < 0.6:
                usage = {"usageMetadata": {"promptTokenCount": rnd.randint(0, tokens)}}
                conn.execute("select * from public.settle(%s, 200, %s)", (rid, Jsonb(usage)))
            elif action < 0.8:
                conn.execute(
                    "select * from public.settle(%s, null, null, 'connect_failed')", (rid,)
                )
            else:
                conn.execute("select * from public.settle(%s, null, null, 'timeout')", (rid,))


@pytest.mark.parametrize("via", ["direct", "pooler"])
def test_32_connections_never_over_grant(
    db: psycopg.Connection[tuple[object, ...]], db_url: str, via: str
) -> None:
    workers_url = pooled(db_url) if via == "pooler" else db_url
    db.execute(
        # Timeouts are a fifth of the settlements here, so three in a row would cool the group
        # down (the outage breaker, tested in tests/client/test_outage.py): it is off here.
        "update public.google_ai_settings set window_ms = %s, window_guard_ms = 100,"
        " outage_after_failures = 0",
        (int(WINDOW.total_seconds() * 1000),),
    )
    db.execute(
        "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
        "values ('conc-model', 'conc-model', %s, %s, %s)",
        (RPM, TPM, RPD),
    )
    db.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
        "values ('c1', 'C1', 'shared'), ('c2', 'C2', 'shared')"
    )
    deadlocks_before = db.execute(
        "select deadlocks from pg_stat_database where datname = current_database()"
    ).fetchone()

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + DURATION_S
    threads = [
        threading.Thread(target=worker, args=(workers_url, i, stop, outcomes, lock))
        for i in range(WORKERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    rows = db.execute(
        "select granted_at, counted_requests, counted_tokens, status, rpd_day "
        "from public.google_ai_reservations where model = 'conc-model'"
    ).fetchall()
    assert outcomes["granted"] == len(rows) > 3 * RPM, outcomes
    assert any(k.startswith("refused:") for k in outcomes), "the limit never bound"

    requests = [(r[0], int(r[1])) for r in rows]
    tokens = [(r[0], int(r[2])) for r in rows]
    assert max_in_sliding_window(requests, WINDOW) <= RPM
    assert max_in_sliding_window(tokens, WINDOW) <= TPM
    per_day = Counter(r[4] for r in rows if r[1])
    assert max(per_day.values()) <= RPD
    assert {r[3] for r in rows} <= {"committed", "released"}, "a reservation was left open"

    deadlocks_after = db.execute(
        "select deadlocks from pg_stat_database where datname = current_database()"
    ).fetchone()
    assert deadlocks_after == deadlocks_before
    audited = db.execute(
        "select count(*) filter (where event = 'granted'), "
        "  coalesce(sum(coalesce((details ->> 'count')::int, 1)) filter (where event = 'refused'), 0) "
        "from public.google_ai_audit_log where model = 'conc-model'"
    ).fetchone()
    refused = sum(v for k, v in outcomes.items() if k.startswith("refused:"))
    assert audited == (len(rows), refused)
