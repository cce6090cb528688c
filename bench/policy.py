"""The bot among the notebooks at full size (llm_limits.testing.policy_load): 16 batch workers
saturate gemma-3-27b (30 RPM, 60 s window + 1 s guard) while the bot calls every 4 s, once with
no reserve and once with an interactive RPM reserve of 0.5. Reports the bot's waits (the
database's waited_ms and the whole call as the bot saw it) and the pool's use."""

from __future__ import annotations

import statistics
from typing import Any

import psycopg

from llm_limits.testing import policy_load

WINDOW_MS, GUARD_MS, RPM = 60_000, 1000, 30


def policy_run(url: str, seconds: float = 130.0) -> dict[str, float]:
    m: dict[str, float] = {"policy_seconds": seconds}
    for name, reserve in (("none", 0.0), ("half", 0.5)):
        db_url = _fresh(url, f"bench_policy_{name}")
        with psycopg.connect(db_url, autocommit=True) as db:
            out = policy_load.run(
                db, db_url, window_ms=WINDOW_MS, guard_ms=GUARD_MS, rpm=RPM, batch_workers=16,
                bot_every=4.0, duration=seconds, rpm_reserve=reserve, bot=True,
            )  # fmt: skip
        waits = sorted(out.bot_waits_ms)
        calls = sorted(out.bot_calls_s)
        m[f"policy_{name}_bot_calls"] = len(waits)
        m[f"policy_{name}_wait_p50_ms"] = statistics.median(waits)
        m[f"policy_{name}_wait_p95_ms"] = statistics.quantiles(waits, n=20)[-1]
        m[f"policy_{name}_call_p95_ms"] = statistics.quantiles(calls, n=20)[-1] * 1000
        m[f"policy_{name}_refusals"] = out.bot_refusals
        m[f"policy_{name}_429s"] = out.google_429s
        m[f"policy_{name}_use"] = len(out.grants) * (WINDOW_MS + GUARD_MS) / 1000 / seconds / RPM
    return m


def _fresh(url: str, name: str) -> str:
    from bench.run import fresh_db

    return fresh_db(url, name)


def report_lines(m: dict[str, Any]) -> list[str]:
    rows = []
    for name, label in (("none", "no reserve"), ("half", "interactive RPM reserve 0.5")):
        rows.append(
            f"| bot every 4 s among 16 batch workers, 30 RPM, {label} |"
            f" wait p50 {m[f'policy_{name}_wait_p50_ms']:.0f} ms, p95"
            f" {m[f'policy_{name}_wait_p95_ms']:.0f} ms (whole call p95"
            f" {m[f'policy_{name}_call_p95_ms']:.0f} ms);"
            f" {m[f'policy_{name}_bot_calls']:.0f} calls,"
            f" {m[f'policy_{name}_refusals']:.0f} refused; pool use"
            f" {m[f'policy_{name}_use']:.0%}; {m[f'policy_{name}_429s']:.0f} 429s |"
            f" {'p95 ≤ 2.5 s' if name == 'none' else 'p95 ≤ 0.3 s'} |"
        )
    return rows
