"""`make bench`: llm-limits measured next to a pgbench baseline from the same run.

Everything runs on one throwaway cluster started by scripts/bench.sh. Each
figure is printed next to its goal and, where the goal is relative, next to
the baseline (`pgbench -N` on the same cluster, same client count). The
result is written to BENCHMARKS.md between markers, so the prose around it
stays hand-written.

    python -m bench.run --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.batch import batch_run
from bench.batch import report_line as batch_line
from bench.client_overhead import client_overhead
from bench.client_waits import client_waits
from bench.client_waits import section as client_waits_section
from bench.fair_turns import fair_turns_run
from bench.fair_turns import section as fair_turns_section
from bench.gateway import gateway_overhead, report_line
from bench.outage import outage_run
from bench.outage import report_line as outage_line
from bench.policy import policy_run
from bench.policy import section as policy_section
from bench.restart import report_line as restart_line
from bench.restart import restart_run
from bench.storage import render as render_storage
from bench.storage import storage
from bench.tokens import section as tokens_section
from bench.tokens import token_counting
from llm_limits.local import localstack

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 16
Conn = psycopg.Connection[tuple[Any, ...]]


def connect(url: str) -> Conn:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def fresh_db(admin_url: str, name: str) -> str:
    with connect(admin_url) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    localstack.bootstrap(url)
    localstack.push(url, REPO)
    return url


def settle_200(
    conn: Conn, reservation_id: object, prompt_tokens: int, completion_tokens: int
) -> None:
    """Settle a grant as the carriers do when Google answers 200 with its usageMetadata."""
    usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": completion_tokens}
    conn.execute(
        "select action from public.settle(reservation_id => %s::uuid, http_status => 200,"
        " response => %s::jsonb)",
        (reservation_id, Jsonb({"usageMetadata": usage})),
    )


def release_unsent(conn: Conn, reservation_id: object) -> None:
    """Settle a grant whose call never went out: refunded at once."""
    conn.execute(
        "select action from public.settle(reservation_id => %s::uuid, http_status => null,"
        " transport_error => 'not_sent')",
        (reservation_id,),
    )


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def pgbench(url: str, args: list[str], seconds: int) -> float:
    out = subprocess.run(
        ["pgbench", "-n", "-c", str(CLIENTS), "-j", "2", "-T", str(seconds), *args, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def seed_bench(url: str, keys: int = 16) -> None:
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values "
            "('bench-free', 'bench-free', 1000000000, 2000000000, 2000000000), "
            "('bench-30k', 'bench-30k', 30000, 2000000000, 2000000000)"
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "select 'bench-' || i, 'BENCH_' || i, 'bench-group-' || i "
            "from generate_series(1, %s) as i",
            (keys,),
        )


# --- throughput ------------------------------------------------------------


def throughput(admin_url: str, seconds: int, hot_limit_seconds: int) -> dict[str, float]:
    base = fresh_db(admin_url, "bench_pgbench")
    subprocess.run(["pgbench", "-i", "-q", "-s", "16", base], capture_output=True, check=True)
    baseline = pgbench(base, ["-N"], seconds)

    url = fresh_db(admin_url, "bench_pairs")
    seed_bench(url)
    # The pairs as the carriers make them: acquire, then settle with Google's 200.
    spread = pgbench(url, ["-f", str(REPO / "bench/acquire_settle_spread.sql")], seconds)
    hot = pgbench(
        url, ["-f", str(REPO / "bench/acquire_settle_hot.sql"), "-D", "model=bench-free"], seconds
    )
    # (c) runs past one whole window so the 30,000 RPM limit binds; the
    # largest count of grants in any sliding 60 s is read back from the ledger.
    hot30k_calls = pgbench(
        url,
        ["-f", str(REPO / "bench/acquire_settle_hot.sql"), "-D", "model=bench-30k"],
        hot_limit_seconds,
    )
    with connect(url) as conn:
        row = conn.execute(
            "select count(*), max(n) from (select count(*) over (order by granted_at range "
            "between interval '59.999999 seconds' preceding and current row) as n "
            "from public.google_ai_reservations where model = 'bench-30k') as w"
        ).fetchone()
    assert row is not None
    return {
        "baseline_tps": baseline,
        "spread_pairs": spread,
        "hot_pairs": hot,
        "hot30k_calls": hot30k_calls,
        "hot30k_grants_per_s": row[0] / hot_limit_seconds,
        "hot30k_max_60s": float(row[1] or 0),
    }


# --- latency ---------------------------------------------------------------


def pair_latencies(url: str, clients: int, pairs_each: int) -> tuple[list[float], list[float]]:
    acq: list[float] = []
    com: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        alias = f"bench-{i % 16 + 1}"
        mine_a: list[float] = []
        mine_c: list[float] = []
        with connect(url) as conn:
            for _ in range(pairs_each):
                t0 = time.perf_counter()
                row = conn.execute(
                    "select reservation_id from public.acquire(model => 'bench-free'::text, "
                    "tokens => 100::int, key_aliases => array[%s]::text[])",
                    (alias,),
                ).fetchone()
                t1 = time.perf_counter()
                assert row is not None
                settle_200(conn, row[0], 90, 10)
                t2 = time.perf_counter()
                mine_a.append((t1 - t0) * 1000)
                mine_c.append((t2 - t1) * 1000)
        with lock:
            acq.extend(mine_a)
            com.extend(mine_c)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acq, com


def latency(admin_url: str) -> dict[str, float]:
    url = fresh_db(admin_url, "bench_latency")
    seed_bench(url)
    pair_latencies(url, 1, 200)  # warm caches and plans
    a1, c1 = pair_latencies(url, 1, 2000)
    a16, c16 = pair_latencies(url, CLIENTS, 300)
    return {
        "acquire_p50_1": pct(a1, 50),
        "acquire_p99_1": pct(a1, 99),
        "settle_p50_1": pct(c1, 50),
        "settle_p99_1": pct(c1, 99),
        "acquire_p50_16": pct(a16, 50),
        "acquire_p99_16": pct(a16, 99),
        "settle_p50_16": pct(c16, 50),
        "settle_p99_16": pct(c16, 99),
    }


# --- cost growth -----------------------------------------------------------


def acquire_p50(url: str, alias: str | None, n: int = 1500) -> float:
    times = []
    with connect(url) as conn:
        for i in range(n + 100):
            t0 = time.perf_counter()
            row = conn.execute(
                "select reservation_id from public.acquire(model => 'bench-free'::text, "
                "tokens => 100::int, key_aliases => %s::text[])",
                ([alias] if alias else None,),
            ).fetchone()
            times.append((time.perf_counter() - t0) * 1000)
            assert row is not None
            settle_200(conn, row[0], 90, 10)
            _ = i
    return statistics.median(times[100:])


def fill_history(url: str, rows: int) -> None:
    """Old, settled ledger rows and their audit rows, as weeks of traffic leave them."""
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_reservations (key_alias, quota_group, model, api_model,"
            " status, estimated_tokens, actual_tokens, counted_tokens, granted_at, rpd_day,"
            " lease_until, settled_at) "
            "select 'bench-' || (i %% 16 + 1), 'bench-group-' || (i %% 16 + 1), 'bench-free',"
            " 'bench-free', 'committed', 100, 90, 90, t, t::date, t, t "
            "from generate_series(1, %s) as i, "
            "lateral (select now() - interval '2 hours' - i * interval '10 ms' as t) as x",
            (rows,),
        )
        conn.execute(
            "insert into public.google_ai_audit_records (ts, event, key_alias, model, details) "
            "select now() - interval '2 hours' - i * interval '10 ms', 'granted', 'bench-1',"
            " 'bench-free', '{}'::jsonb from generate_series(1, %s) as i",
            (rows,),
        )
        conn.execute("vacuum analyze public.google_ai_reservations")
        conn.execute("vacuum analyze public.google_ai_audit_records")


def cost_growth(admin_url: str, big_rows: int) -> dict[str, float]:
    small = fresh_db(admin_url, "bench_small")
    seed_bench(small)
    fill_history(small, 10_000)
    big = fresh_db(admin_url, "bench_big")
    seed_bench(big)
    fill_history(big, big_rows)
    keys10 = fresh_db(admin_url, "bench_keys10")
    seed_bench(keys10, keys=10)
    keys1000 = fresh_db(admin_url, "bench_keys1000")
    seed_bench(keys1000, keys=1000)
    return {
        "p50_10k": acquire_p50(small, "bench-1"),
        "p50_big": acquire_p50(big, "bench-1"),
        "p50_keys10": acquire_p50(keys10, "bench-1"),
        "p50_keys1000": acquire_p50(keys1000, "bench-1"),
        "p50_keys10_all": acquire_p50(keys10, None, 500),
        "p50_keys1000_all": acquire_p50(keys1000, None, 500),
    }


# --- utilization, grant lag, fairness (WAIT quality) ------------------------

WINDOW_MS, GUARD_MS = 10_000, 100


def acquire_waiting(
    conn: Conn, model: str, tokens: int, max_wait_ms: int, caller: str | None = None,
    calls: list[int] | None = None,
) -> tuple[bool, Any, int]:  # fmt: skip
    """(granted, reservation_id, waited_ms) of one WAIT as the carriers make it: while the
    answer is 'queued', sleep retry_after_ms (holding no transaction) and call again with the
    ticket it returned. `calls`, when given, counts the acquire calls."""
    ticket = None
    while True:
        if calls is not None:
            calls[0] += 1
        row = conn.execute(
            "select granted, reservation_id, waited_ms, reason, retry_after_ms, ticket"
            " from public.acquire(model => %s::text, tokens => %s::int, mode => 'WAIT',"
            " max_wait_ms => %s::int, caller => %s::text, ticket => %s::uuid)",
            (model, tokens, max_wait_ms, caller, ticket),
        ).fetchone()
        assert row is not None
        if row[3] != "queued":
            return bool(row[0]), row[1], int(row[2] or 0)
        ticket = row[5]
        time.sleep(row[4] / 1000)


@contextmanager
def waiters(url: str, n: int, body: Callable[[Conn, int], None], seconds: float):  # type: ignore[no-untyped-def]
    stop = time.monotonic() + seconds
    threads = []

    def loop(i: int) -> None:
        with connect(url) as conn:
            while time.monotonic() < stop:
                body(conn, i)

    for i in range(n):
        t = threading.Thread(target=loop, args=(i,))
        t.start()
        threads.append(t)
    yield stop
    for t in threads:
        t.join()


def utilization(admin_url: str, windows: int, url: str | None = None) -> dict[str, float]:
    """Saturating WAIT demand on one group for `windows` windows of 10 s (on `url`, a fresh
    database made here unless given).

    Utilization = what was granted / what the limits allowed, measured over
    the windows after the first (the first window is an unconstrained burst).
    """
    url = url or fresh_db(admin_url, "bench_util")
    with connect(url) as conn:
        conn.execute(
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s, "
            "wait_recheck_ms = 25",
            (WINDOW_MS, GUARD_MS),
        )
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values "
            "('util-rpm', 'util-rpm', 60, 100000000, 100000000), "
            "('util-tpm', 'util-tpm', 100000, 20000, 100000000)"
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('u1', 'U1', 'util-group')"
        )
    # Demand runs a little past the measured windows so it never thins out.
    seconds = windows * WINDOW_MS / 1000 + 2

    def rpm_call(conn: Conn, i: int) -> None:
        granted, rid, _ = acquire_waiting(conn, "util-rpm", 10, 15000)
        if granted:
            settle_200(conn, rid, 10, 5)

    def tpm_call(conn: Conn, i: int) -> None:
        # Estimate 400 tokens (2% of the TPM), actually 320: commit reconciles at once.
        granted, rid, _ = acquire_waiting(conn, "util-tpm", 400, 15000)
        if granted:
            time.sleep(0.05)
            settle_200(conn, rid, 320, 5)

    with waiters(url, 8, rpm_call, seconds):
        pass
    with waiters(url, 8, tpm_call, seconds):
        pass

    result: dict[str, float] = {}
    with connect(url) as conn:
        for model, limit, column in (
            ("util-rpm", 60, "counted_requests"),
            ("util-tpm", 20000, "counted_tokens"),
        ):
            rows = conn.execute(
                f"select granted_at, {column} from public.google_ai_reservations "
                "where model = %s order by granted_at",
                (model,),
            ).fetchall()
            start: datetime = rows[0][0]
            # Measure windows 2..N: the first is an unconstrained burst.
            lo, hi = WINDOW_MS, windows * WINDOW_MS
            steady = [w for t, w in rows if lo <= (t - start).total_seconds() * 1000 < hi]
            result[f"util_{model}"] = sum(steady) / (limit * (windows - 1))
            # Grant lag for RPM: a slot frees at (grant k-60) + window + guard.
            if model == "util-rpm":
                times = [t for t, _ in rows]
                lags = []
                for k in range(limit, len(times)):
                    free_at = times[k - limit].timestamp() + (WINDOW_MS + GUARD_MS) / 1000
                    lag = (times[k].timestamp() - free_at) * 1000
                    if lag >= 0:
                        lags.append(lag)
                result["lag_window_p50"] = pct(lags, 50)
                result["lag_window_p95"] = pct(lags, 95)
        # Grants are read from the ledger, which keeps no round count: only WAITs that
        # ended refused carry one (nan when none did).
        rounds = conn.execute(
            "select sum((details ->> 'rounds')::int - 1), sum((details ->> 'waited_ms')::int) "
            "from public.google_ai_audit_log where event in ('granted', 'refused') "
            "and (details ->> 'waited_ms')::int > 0 and details ? 'rounds'"
        ).fetchone()
        assert rounds is not None
        result["rechecks_per_waiter_s"] = (
            float(rounds[0] or 0) / (float(rounds[1]) / 1000) if rounds[1] else float("nan")
        )
        result["util_max"] = WINDOW_MS / (WINDOW_MS + GUARD_MS)
    return result


def release_lags(holder: Conn, model: str, wait: Callable[[], Any], samples: int) -> list[float]:
    """ms from a release to the grant of the one waiter (`wait()` returns its reservation id)
    on a window the holder's grant fills (`model` allows 1 request)."""
    lags = []
    for i in range(samples):
        row = holder.execute(
            "select reservation_id from public.acquire(%s::text, 1)", (model,)
        ).fetchone()
        assert row is not None and row[0] is not None
        got: dict[str, Any] = {}

        def run(got: dict[str, Any] = got) -> None:
            got["rid"] = wait()
            got["t"] = time.perf_counter()

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.1 + (i % 7) * 0.013)
        release_unsent(holder, row[0])
        released = time.perf_counter()
        t.join()
        assert got["rid"] is not None
        lags.append((got["t"] - released) * 1000)
        release_unsent(holder, got["rid"])
    return lags


def release_lag(admin_url: str, samples: int) -> dict[str, float]:
    """A full window, one waiter, then a release: how long until it holds the slot?"""
    url = fresh_db(admin_url, "bench_lag")
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
            "values ('lag-model', 'lag-model', 1, 100000, 100000000)"
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('l1', 'L1', 'lag-group')"
        )
    with connect(url) as holder, connect(url) as waiter_conn:

        def wait() -> Any:
            return acquire_waiting(waiter_conn, "lag-model", 1, 5000)[1]

        lags = release_lags(holder, "lag-model", wait, samples)
    return {"lag_release_p50": pct(lags, 50), "lag_release_p95": pct(lags, 95)}


def fairness(admin_url: str, seconds: float) -> dict[str, float]:
    """Small (100-token) and large (2,000-token) WAIT callers share one group
    whose TPM (4,000 per 10 s) binds. FIFO must not let the small ones starve
    the large ones."""
    url = fresh_db(admin_url, "bench_fair")
    with connect(url) as conn:
        conn.execute(
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
            (WINDOW_MS, GUARD_MS),
        )
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
            "values ('fair-model', 'fair-model', 100000, 4000, 100000000)"
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('f1', 'F1', 'fair-group')"
        )
    waits: dict[str, list[float]] = {"small": [], "large": []}
    lock = threading.Lock()

    def call(conn: Conn, i: int) -> None:
        kind = "large" if i == 0 else "small"
        tokens = 2000 if kind == "large" else 100
        granted, rid, waited_ms = acquire_waiting(conn, "fair-model", tokens, 30000, kind)
        if granted:
            settle_200(conn, rid, tokens, 5)
            with lock:
                waits[kind].append(float(waited_ms))

    with waiters(url, 6, call, seconds):
        pass
    return {
        "large_grants": float(len(waits["large"])),
        "small_grants": float(len(waits["small"])),
        "large_max_wait_ms": max(waits["large"], default=float("nan")),
        "small_max_wait_ms": max(waits["small"], default=float("nan")),
        "large_p50_wait_ms": pct(waits["large"], 50),
        "small_p50_wait_ms": pct(waits["small"], 50),
    }


# --- report ------------------------------------------------------------------


def machine(admin_url: str) -> str:
    with connect(admin_url) as conn:
        version = conn.execute("show server_version").fetchone()
        settings = conn.execute(
            "select string_agg(name || '=' || setting || coalesce(unit, ''), ', ' order by name) "
            "from pg_settings where name in ('shared_buffers', 'synchronous_commit', 'fsync', "
            "'max_connections', 'wal_level', 'work_mem')"
        ).fetchone()
    assert version and settings
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"PostgreSQL {version[0]} ({settings[0]})"
    )


def render(m: dict[str, float], machine_line: str, argv: str) -> str:
    base = m["baseline_tps"]

    def ratio(x: float) -> str:
        return f"{x / base:.2f}×"

    def ok(cond: bool) -> str:
        return "met" if cond else "**not met**"

    growth_rows = m["p50_big"] / m["p50_10k"]
    growth_keys = m["p50_keys1000"] / m["p50_keys10"]
    lines = [
        f"Measured {datetime.now().strftime('%Y-%m-%d %H:%M UTC')} by `{argv}` on: {machine_line}.",
        "",
        f"Baseline: `pgbench -N -c {CLIENTS} -j 2` on the same cluster: **{base:.0f} tps**.",
        "",
        "| measurement | figure | vs baseline | goal | |",
        "|---|---|---|---|---|",
        f"| (a) acquire+settle pairs/s, 16 clients, 16 groups | {m['spread_pairs']:.0f} |"
        f" {ratio(m['spread_pairs'])} | ≥ 0.36× | {ok(m['spread_pairs'] >= 0.36 * base)} |",
        f"| (b) pairs/s, 16 clients, one hot group, limit not binding | {m['hot_pairs']:.0f} |"
        f" {ratio(m['hot_pairs'])} | ≥ 0.21× | {ok(m['hot_pairs'] >= 0.21 * base)} |",
        f"| (c) acquire calls/s, one hot group at 30,000 RPM, {m['hot_limit_seconds']:.0f} s |"
        f" {m['hot30k_calls']:.0f} ({m['hot30k_grants_per_s']:.0f} granted/s; most grants in any"
        f" 60 s: {m['hot30k_max_60s']:.0f}) | {ratio(m['hot30k_calls'])} |"
        f" ≤ 30,000 per 60 s | {ok(m['hot30k_max_60s'] <= 30000)} |",
        f"| acquire p50 / p99, uncontended | {m['acquire_p50_1']:.2f} / {m['acquire_p99_1']:.2f} ms"
        f" | | p50 ≤ 1 ms | {ok(m['acquire_p50_1'] <= 1.0)} |",
        f"| settle (200) p50 / p99, uncontended | {m['settle_p50_1']:.2f} /"
        f" {m['settle_p99_1']:.2f} ms"
        " | | | |",
        f"| acquire p50 / p99, 16 clients | {m['acquire_p50_16']:.2f} /"
        f" {m['acquire_p99_16']:.2f} ms | | | |",
        f"| settle (200) p50 / p99, 16 clients | {m['settle_p50_16']:.2f} /"
        f" {m['settle_p99_16']:.2f} ms"
        " | | | |",
        f"| acquire p50 with 10 k vs {m['big_rows']:.0f} old ledger + audit rows |"
        f" {m['p50_10k']:.2f} → {m['p50_big']:.2f} ms ({growth_rows:.2f}×) | | ≤ 1.3× |"
        f" {ok(growth_rows <= 1.3)} |",
        f"| acquire p50 with 10 vs 1,000 keys (caller passes its alias) |"
        f" {m['p50_keys10']:.2f} → {m['p50_keys1000']:.2f} ms ({growth_keys:.2f}×) | | ≤ 1.3× |"
        f" {ok(growth_keys <= 1.3)} |",
        f"| same, key_aliases = null (every key a candidate) |"
        f" {m['p50_keys10_all']:.2f} → {m['p50_keys1000_all']:.2f} ms | | (info) | |",
        f"| utilization, RPM-bound WAIT load, {m['windows']:.0f} windows |"
        f" {m['util_util-rpm'] * 100:.1f}% (ceiling {m['util_max'] * 100:.1f}%) | | ≥ 98% |"
        f" {ok(m['util_util-rpm'] >= 0.98)} |",
        f"| utilization, TPM-bound WAIT load (estimate 400, actual 320 tokens) |"
        f" {m['util_util-tpm'] * 100:.1f}% | | ≥ 98% | {ok(m['util_util-tpm'] >= 0.98)} |",
        f"| grant lag after a window slot frees, p50 / p95 |"
        f" {m['lag_window_p50']:.1f} / {m['lag_window_p95']:.1f} ms | | p95 ≤ 20 ms |"
        f" {ok(m['lag_window_p95'] <= 20)} |",
        f"| grant lag after a release, p50 / p95 |"
        f" {m['lag_release_p50']:.1f} / {m['lag_release_p95']:.1f} ms | | p95 ≤ 50 ms |"
        f" {ok(m['lag_release_p95'] <= 50)} |",
        f"| re-checks per second per waiter (server side, no client polling) |"
        f" {m['rechecks_per_waiter_s']:.1f} | | no busy polling | |",
        f"| fairness: max wait large (2,000 tok) vs small (100 tok) |"
        f" {m['large_max_wait_ms']:.0f} vs {m['small_max_wait_ms']:.0f} ms"
        f" ({m['large_grants']:.0f} large, {m['small_grants']:.0f} small grants) | |"
        f" large not starved | {ok(m['large_grants'] > 0)} |",
    ]
    lines.append(
        f"| client overhead around a Google call (acquire + settle), median |"
        f" {m['client_overhead_ms']:.2f} ms ({m['sdk_call_ms']:.2f} ms bare SDK call to the"
        f" fake server vs {m['client_call_ms']:.2f} ms through the client) | | (info) | |"
    )
    lines += client_waits_section(m)
    lines += tokens_section(m)
    lines.append(report_line(m))
    lines.append(batch_line(m))
    lines.append(outage_line(m))
    lines.append(restart_line(m))
    return "\n".join(lines) + "\n\n" + policy_section(m) + "\n" + fair_turns_section(m)


def write(report: str, path: Path) -> None:
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{report}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--seconds", type=int, default=20, help="per pgbench run")
    parser.add_argument("--hot-limit-seconds", type=int, default=75, help="run (c) this long")
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()

    m: dict[str, float] = {
        "big_rows": args.big_rows,
        "windows": args.windows,
        "hot_limit_seconds": args.hot_limit_seconds,
    }
    steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
        ("throughput", lambda: throughput(args.admin_url, args.seconds, args.hot_limit_seconds)),
        ("latency", lambda: latency(args.admin_url)),
        ("cost growth", lambda: cost_growth(args.admin_url, args.big_rows)),
        ("utilization and grant lag", lambda: utilization(args.admin_url, args.windows)),
        ("release lag", lambda: release_lag(args.admin_url, 40)),
        ("fairness", lambda: fairness(args.admin_url, 30)),
        # Before the client overhead: it installs the Gemma 3 tokenizer the client then uses.
        ("token counting", lambda: token_counting(args.admin_url)),
    ]
    steps.append(
        (
            "client overhead",
            lambda: client_overhead(fresh_db(args.admin_url, "bench_client")),
        )
    )
    steps.append(
        ("client waits", lambda: client_waits(fresh_db(args.admin_url, "bench_client_waits")))
    )
    steps.append(("storage and writes per call", lambda: storage(args.admin_url)))
    steps.append(("gateway", lambda: gateway_overhead(fresh_db(args.admin_url, "bench_gateway"))))
    steps.append(("batch", lambda: batch_run(fresh_db(args.admin_url, "bench_batch"))))
    steps.append(("caller policy", lambda: policy_run(args.admin_url)))
    steps.append(("fair turns", lambda: fair_turns_run(args.admin_url)))
    steps.append(("Google outage", lambda: outage_run(lambda name: fresh_db(args.admin_url, name))))
    steps.append(("a restart while callers wait", restart_run))  # on a cluster of its own

    from bench import pooler  # it imports this module's helpers

    steps.append(("WAIT through a pooler", lambda: pooler.pooler(args.admin_url)))
    for name, step in steps:
        t0 = time.monotonic()
        m.update(step())
        print(f"{name}: done in {time.monotonic() - t0:.0f} s", flush=True)
    report = render(m, machine(args.admin_url), "make bench") + "\n" + pooler.render(m) + "\n"
    report += "\n" + render_storage(m, m["baseline_tps"])
    print(report)
    write(report, args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
