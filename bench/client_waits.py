"""How long the client's waits take: the timings the tests used to assert, measured here.

Tests assert what a wait does (granted after the window frees, refused with wait_timeout, the
retry asks only for the wait left, other work gets a pool connection); this measures how long
it takes, each figure next to what it is compared with, on one key (RPM 1) through the real
client against the local fake Gemini (no artificial latency):

* **return after the slot frees:** sequential WAIT calls on a 1 s window, each behind the
  previous grant; the time from the moment that grant leaves the window (its ``granted_at``
  + 1 s, the database's clock) to ``generate`` returning. Baseline: a bare SDK call to the
  fake, which every such return includes.
* **wait_timeout:** WAIT with ``max_wait=0.3`` on a full window; how long until RateLimited.
  Baseline: the 0.3 s asked for.
* **wait_timeout after a killed acquire:** WAIT with ``max_wait=3`` whose waiting acquire's
  backend is terminated 1.5 s in; the client reconnects and waits what is left. Baseline: 3 s.
* **a pool connection while others wait:** three callers WAIT on a client whose
  ``psycopg_pool`` pool has two connections, and other work takes one from it every 0.1 s.
  Baseline: the same work with nobody waiting.

    python -m bench.client_waits --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from google import genai
from google.genai import types
from psycopg_pool import ConnectionPool

import llm_limits
from llm_limits.local.fake_gemini import FakeGemini, Limits

KEY_VAR, KEY = "LLM_LIMITS_BENCH_WAITS_KEY", "bench-waits-key-value"
GROUP = "waits-group"
API_MODEL = "gemma-3-27b-it"
KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
Conn = psycopg.Connection[tuple[Any, ...]]


def _ms(seconds: float) -> float:
    return seconds * 1000


def _setup(url: str) -> None:
    """One key in its own group and one RPM-1 model per measurement (own ledgers, own line)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('waits-k1', %s, %s) on conflict (key_alias) do nothing",
            (KEY_VAR, GROUP),
        )
        for model in ("waits-lag", "waits-timeout", "waits-killed", "waits-pool"):
            conn.execute(
                "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd, "
                "token_counter) values (%s, %s, 1, 1000000, 1000000, 'bytes')",
                (model, API_MODEL),
            )
    os.environ[KEY_VAR] = KEY


def _window(url: str, window_ms: int, guard_ms: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
            (window_ms, guard_ms),
        )


def _fill(url: str, model: str) -> None:
    """Take the model's only slot as another caller."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select granted from public.acquire(model => %s, tokens => 10, "
            "key_aliases => array['waits-k1'], caller => 'blocker')",
            (model,),
        ).fetchone()
    assert row == (True,), row


def return_after_free(url: str, fake: FakeGemini, samples: int) -> dict[str, float]:
    """WAIT calls one after another on a 1 s window: how soon each returns once it may."""
    _window(url, 1000, 0)
    returned: list[float] = []
    with llm_limits.Client(url, base_url=fake.base_url, timeout=10.0) as client:
        for i in range(samples + 1):
            client.generate("waits-lag", f"call {i}", mode="WAIT", max_wait=5.0)
            returned.append(time.time())
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select granted_at from public.google_ai_reservations where model = 'waits-lag' "
            "order by granted_at"
        ).fetchall()
    granted: list[datetime] = [r[0] for r in rows]
    assert len(granted) == samples + 1
    frees = [(g + timedelta(seconds=1)).timestamp() for g in granted[:-1]]
    lags = [_ms(back - free) for back, free in zip(returned[1:], frees, strict=True)]
    grant_lags = [_ms(g.timestamp() - free) for g, free in zip(granted[1:], frees, strict=True)]
    return {
        "cw_return_p50_ms": statistics.median(lags),
        "cw_return_max_ms": max(lags),
        "cw_grant_p50_ms": statistics.median(grant_lags),
    }


def bare_call_ms(fake: FakeGemini, samples: int) -> float:
    """Median of a bare google-genai call to the fake: what every client return includes."""
    options = types.HttpOptions(base_url=fake.base_url, api_version="v1beta", timeout=10_000)
    sdk = genai.Client(api_key=KEY, http_options=options)
    times = []
    for i in range(samples + 5):
        t0 = time.perf_counter()
        sdk.models.generate_content(model=API_MODEL, contents=f"bare {i}")
        times.append(_ms(time.perf_counter() - t0))
    sdk.close()
    return statistics.median(times[5:])


def _timed_refusal(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    try:
        call()
    except llm_limits.RateLimited as exc:
        assert exc.reason == "wait_timeout", exc.reason
        return time.perf_counter() - t0
    raise AssertionError("granted on a full window")


def wait_timeouts(url: str, fake: FakeGemini, samples: int) -> dict[str, float]:
    """WAIT max_wait=0.3 on a full 60 s window: how long until RateLimited."""
    _window(url, 60_000, 1000)
    _fill(url, "waits-timeout")
    with llm_limits.Client(url, base_url=fake.base_url, timeout=10.0) as client:
        took = [
            _ms(_timed_refusal(lambda: client.generate("waits-timeout", "x", max_wait=0.3)))
            for _ in range(samples)
        ]
    return {"cw_timeout_p50_ms": statistics.median(took), "cw_timeout_max_ms": max(took)}


def _waiting_backend(admin: Conn, other_than: int | None = None) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute(
            "select pid from pg_stat_activity where datname = current_database() "
            "and pid <> pg_backend_pid() and state = 'active' and query like %s "
            "and pid is distinct from %s",
            ("%public.acquire%", other_than),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("no acquire showed up in pg_stat_activity")


def killed_timeouts(url: str, fake: FakeGemini, samples: int) -> dict[str, float]:
    """WAIT max_wait=3 whose acquire is terminated 1.5 s in: how long until RateLimited."""
    _window(url, 60_000, 1000)
    _fill(url, "waits-killed")
    took: list[float] = []
    with (
        llm_limits.Client(url, base_url=fake.base_url, timeout=10.0) as client,
        psycopg.connect(url, autocommit=True) as admin,
    ):

        def call() -> None:
            refused = _timed_refusal(lambda: client.generate("waits-killed", "x", max_wait=3.0))
            took.append(_ms(refused))

        for i in range(samples):
            caller = threading.Thread(target=call)
            caller.start()
            pid = _waiting_backend(admin)
            time.sleep(1.5)
            admin.execute("select pg_terminate_backend(%s)", (pid,))
            caller.join(timeout=15)
            assert len(took) == i + 1, "the caller did not come back"
    return {"cw_killed_p50_ms": statistics.median(took), "cw_killed_max_ms": max(took)}


def _probe(pool: ConnectionPool[Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with pool.connection(timeout=10) as conn:
            conn.execute("select 1")
        times.append(_ms(time.perf_counter() - t0))
        time.sleep(0.1)
    return times


def pool_probes(url: str, fake: FakeGemini, probes: int) -> dict[str, float]:
    """A two-connection pool: `select 1` through it with three callers waiting, and without."""
    _window(url, 2000, 100)
    with (
        ConnectionPool(url, kwargs=KWARGS, min_size=2, max_size=2) as pool,
        llm_limits.Client(pool=pool, base_url=fake.base_url, timeout=10.0) as client,
    ):
        quiet = _probe(pool, probes)
        _fill(url, "waits-pool")
        callers = [
            threading.Thread(
                target=client.generate,
                args=("waits-pool", f"waiter {i}"),
                kwargs={"max_wait": 15.0},
            )
            for i in range(3)
        ]
        for t in callers:
            t.start()
        time.sleep(0.2)  # all three in line
        busy = _probe(pool, probes)
        for t in callers:
            t.join(timeout=30)
    return {
        "cw_pool_quiet_p50_ms": statistics.median(quiet),
        "cw_pool_quiet_max_ms": max(quiet),
        "cw_pool_busy_p50_ms": statistics.median(busy),
        "cw_pool_busy_max_ms": max(busy),
    }


def client_waits(url: str) -> dict[str, float]:
    _setup(url)
    limits = {API_MODEL: Limits(1_000_000, 1_000_000_000, 1_000_000_000)}
    with FakeGemini({GROUP: [KEY]}, limits) as fake:
        m = {"cw_bare_call_ms": bare_call_ms(fake, 30)}
        m |= return_after_free(url, fake, 15)
        m |= wait_timeouts(url, fake, 10)
        m |= killed_timeouts(url, fake, 3)
        m |= pool_probes(url, fake, 15)
    return m


def section(m: dict[str, float]) -> list[str]:
    """The rows of the main table (timing figures moved out of the tests)."""
    return [
        f"| client WAIT on a full 1 s window (RPM 1): return after the slot frees, p50 / max |"
        f" {m['cw_return_p50_ms']:.1f} / {m['cw_return_max_ms']:.1f} ms (the grant itself:"
        f" {m['cw_grant_p50_ms']:.1f} ms p50) | bare SDK call to the fake"
        f" {m['cw_bare_call_ms']:.1f} ms | (info) | |",
        f"| client WAIT max_wait 0.3 s on a full window: RateLimited after, p50 / max |"
        f" {m['cw_timeout_p50_ms']:.0f} / {m['cw_timeout_max_ms']:.0f} ms | 300 ms asked |"
        f" ≤ max_wait + 100 ms | {'met' if m['cw_timeout_max_ms'] <= 400 else '**not met**'} |",
        f"| the same, max_wait 3 s, its acquire's backend killed 1.5 s in, p50 / max |"
        f" {m['cw_killed_p50_ms']:.0f} / {m['cw_killed_max_ms']:.0f} ms | 3000 ms asked |"
        f" ≤ max_wait + 500 ms |"
        f" {'met' if m['cw_killed_max_ms'] <= 3500 else '**not met**'} |",
        f"| a connection from a 2-connection pool while 3 callers WAIT on it, p50 / max |"
        f" {m['cw_pool_busy_p50_ms']:.1f} / {m['cw_pool_busy_max_ms']:.1f} ms | nobody waiting"
        f" {m['cw_pool_quiet_p50_ms']:.1f} / {m['cw_pool_quiet_max_ms']:.1f} ms | max < 500 ms |"
        f" {'met' if m['cw_pool_busy_max_ms'] < 500 else '**not met**'} |",
    ]


def main() -> None:
    from bench.run import fresh_db

    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    args = parser.parse_args()
    m = client_waits(fresh_db(args.admin_url, "bench_client_waits"))
    print("\n".join(section(m)))


if __name__ == "__main__":
    main()
