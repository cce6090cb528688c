"""WAIT behind a transaction pooler: PgBouncer (transaction mode, 8 server connections) with 24
WAIT callers on one 30-RPM group, and a probe running `select 1` every 0.5 s through it.

Two designs are measured in the same run, each on its own fresh database:

* sliced: acquire with a ticket, as the client calls it: each call stays in the database one
  slice at most, and a caller answered 'queued' sleeps retry_after_ms holding no server
  connection;
* one long sleep (the design before tickets): the same calls with wait_slice_ms = 60 s, so
  after its first call (which takes the place in line) a caller sleeps inside the database
  until it is granted.

Figures: utilization over the windows after the first (the first is an unconstrained burst),
grant lag after a window slot frees, the probe's p50/p95, the number of server connections
busy inside acquire (sampled every 50 ms), and, for the sliced design, acquire calls per grant
and the head's grant lag after a release.

    python -m bench.pooler --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.run import Conn, acquire_waiting, connect, fresh_db, pct, release_lags, settle_200
from llm_limits.testing import pooler as pgbouncer

CALLERS, POOL_SIZE, RPM = 24, 8, 30
WINDOW_MS, GUARD_MS = 5000, 100
MAX_WAIT_S = 15.0


def _as_pooled(pooler_url: str, url: str) -> str:
    return pooler_url.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1]


def _seed(url: str, slice_ms: int) -> None:
    with connect(url) as conn:
        conn.execute(
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s, "
            "wait_slice_ms = %s",
            (WINDOW_MS, GUARD_MS, slice_ms),
        )
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
            "values ('pool-rpm', 'pool-rpm', %s, 100000000, 100000000)",
            (RPM,),
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('p1', 'P1', 'pool-group')"
        )


def _grant(conn: Conn, counter: list[int], model: str = "pool-rpm") -> Any:
    """What the client does: one ticket, calls of one slice at most, sleeps between them
    without a connection. With wait_slice_ms = 60 s (the long-sleep design) each call after the
    first, which takes the place in line, sleeps inside the database until it is granted."""
    return acquire_waiting(conn, model, 10, int(MAX_WAIT_S * 1000), calls=counter)[1]


def _run(
    url: str, pooled_url: str, grant: Callable[[Conn, list[int]], Any], windows: int
) -> dict[str, float]:
    stop = time.monotonic() + windows * WINDOW_MS / 1000 + 2
    calls = [0]
    probes: list[float] = []
    busy: list[int] = []
    done = threading.Event()

    def caller() -> None:
        with connect(pooled_url) as conn:
            while time.monotonic() < stop:
                rid = grant(conn, calls)
                if rid is not None:
                    settle_200(conn, rid, 10, 5)

    def probe() -> None:
        with connect(pooled_url) as conn:
            while not done.is_set():
                t0 = time.perf_counter()
                conn.execute("select 1").fetchone()
                probes.append((time.perf_counter() - t0) * 1000)
                done.wait(0.5)

    def sampler() -> None:
        with connect(url) as conn:
            while not done.is_set():
                row = conn.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and state = 'active' and query like '%%public.acquire%%' "
                    "and pid <> pg_backend_pid()"
                ).fetchone()
                busy.append(int(row[0]) if row else 0)
                done.wait(0.05)

    helpers = [threading.Thread(target=probe), threading.Thread(target=sampler)]
    callers = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in helpers + callers:
        t.start()
    for t in callers:
        t.join()
    done.set()
    for t in helpers:
        t.join()

    with connect(url) as conn:
        times: list[datetime] = [
            r[0]
            for r in conn.execute(
                "select granted_at from public.google_ai_reservations where model = 'pool-rpm' "
                "order by granted_at"
            ).fetchall()
        ]
    start = times[0]
    steady = [
        t for t in times if WINDOW_MS <= (t - start).total_seconds() * 1000 < windows * WINDOW_MS
    ]
    lags, head_lags = [], []
    for k in range(RPM, len(times)):
        free_at = times[k - RPM].timestamp() + (WINDOW_MS + GUARD_MS) / 1000
        lag = (times[k].timestamp() - free_at) * 1000
        if lag >= 0:
            lags.append(lag)
            # The first grant after a quiet spell went to the head of the line.
            if (times[k] - times[k - 1]).total_seconds() > 0.5:
                head_lags.append(lag)
    return {
        "util": len(steady) / (RPM * (windows - 1)),
        "lag_p50": pct(lags, 50),
        "lag_p95": pct(lags, 95),
        "head_lag_p50": pct(head_lags, 50),
        "head_lag_max": max(head_lags, default=float("nan")),
        "probe_p50": pct(probes, 50),
        "probe_p95": pct(probes, 95),
        "probe_max": max(probes, default=float("nan")),
        "busy_mean": statistics.fmean(busy) if busy else float("nan"),
        "busy_max": float(max(busy, default=0)),
        "calls_per_grant": calls[0] / max(1, len(times)),
    }


def _release_lag(url: str, pooled_url: str, samples: int) -> dict[str, float]:
    """A full window, one waiter in line (sliced), then a release: how long until it is granted?"""
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
            "values ('pool-lag', 'pool-lag', 1, 100000000, 100000000)"
        )
    with connect(pooled_url) as holder, connect(pooled_url) as waiter:
        lags = release_lags(holder, "pool-lag", lambda: _grant(waiter, [0], "pool-lag"), samples)
    return {"release_lag_p50": pct(lags, 50), "release_lag_p95": pct(lags, 95)}


def pooler(admin_url: str, windows: int = 4) -> dict[str, float]:
    """Both designs through one PgBouncer; keys prefixed sliced_ and long_."""
    out: dict[str, float] = {"pooler_windows": float(windows)}
    with tempfile.TemporaryDirectory(prefix="llm-limits-pgbouncer.") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        bouncer = pgbouncer.up(root / "pgbouncer", admin_url, POOL_SIZE)
        try:
            for prefix, slice_ms, grant in (
                ("sliced", 2000, _grant),
                ("long", 60_000, _grant),
            ):
                url = fresh_db(admin_url, f"bench_pooler_{prefix}")
                _seed(url, slice_ms)
                pooled_url = _as_pooled(bouncer.url(), url)
                figures = _run(url, pooled_url, grant, windows)
                out.update({f"{prefix}_{k}": v for k, v in figures.items()})
                if prefix == "sliced":
                    out.update(_release_lag(url, pooled_url, 30))
                with connect(admin_url) as conn:  # its pool's server connections go too
                    conn.execute(f'drop database "bench_pooler_{prefix}" with (force)')
        finally:
            pgbouncer.down(root / "pgbouncer")
    return out


def render(m: dict[str, float]) -> str:
    """The report section: both designs side by side."""

    def row(name: str, key: str, fmt: str = "{:.1f}") -> str:
        return f"| {name} | {fmt.format(m['sliced_' + key])} | {fmt.format(m['long_' + key])} |"

    ceiling = WINDOW_MS / (WINDOW_MS + GUARD_MS) * 100
    return "\n".join(
        [
            f"WAIT through PgBouncer 1.18 (transaction mode, {POOL_SIZE} server connections):"
            f" {CALLERS} WAIT callers on one {RPM}-RPM group ({WINDOW_MS / 1000:.0f} s window,"
            f" {GUARD_MS} ms guard, {m['pooler_windows']:.0f} windows), and `select 1` every"
            " 0.5 s through the same pooler.",
            "",
            "| through the pooler | sliced WAIT with tickets | one long sleep per call |",
            "|---|---|---|",
            f"| utilization after the first window (ceiling {ceiling:.1f}%) |"
            f" {m['sliced_util'] * 100:.1f}% | {m['long_util'] * 100:.1f}% |",
            row("grant lag after a window slot frees, p50 (ms)", "lag_p50"),
            row("grant lag after a window slot frees, p95 (ms)", "lag_p95"),
            f"| the same for the head of the line (first grant of each burst), p50 / worst (ms) |"
            f" {m['sliced_head_lag_p50']:.1f} / {m['sliced_head_lag_max']:.1f} |"
            f" {m['long_head_lag_p50']:.1f} / {m['long_head_lag_max']:.1f} |",
            row("probe `select 1` p50 (ms)", "probe_p50"),
            row("probe `select 1` p95 (ms)", "probe_p95"),
            row("probe `select 1` worst (ms)", "probe_max"),
            row("server connections busy in acquire, mean", "busy_mean"),
            row("server connections busy in acquire, max", "busy_max", "{:.0f}"),
            row("acquire calls per grant", "calls_per_grant", "{:.2f}"),
            f"| head's grant lag after a release, p50 / p95 (ms) |"
            f" {m['release_lag_p50']:.1f} / {m['release_lag_p95']:.1f} | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--windows", type=int, default=4)
    args = parser.parse_args()
    print(render(pooler(args.admin_url, args.windows)))


if __name__ == "__main__":
    main()
