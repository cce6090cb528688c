"""A Google outage at the start of a minute, at full size (llm_limits.testing.outage_load).

Google (the local fake) answers 503 to every call for 17 s; at the same moment twelve real
clients set out to get one answer each from gemma-3-27b (60 RPM, 60 s window + 1 s guard):
ten with 30 s of patience (the client's default max_wait), two with 10 s (less than the
outage). Each calls ``generate`` with WAIT and calls again after a ``ServerError``, as a bot
retries a user's message. Measured once with the default outage cooldowns (3 failures in a
row, 1 s doubling to 8 s) and once without (outage_after_failures = 0, the baseline): slots
spent on failed attempts (the 503s the fake answered), ServerErrors raised to the callers,
patient callers answered and how long after the outage ended, 429s.

    python -m bench.outage --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import psycopg

from llm_limits.testing import outage_load

WINDOW_MS, GUARD_MS, RPM = 60_000, 1000, 60
OUTAGE_S = 17.0
PATIENT, IMPATIENT = 30.0, 10.0
LATENCY_S = 0.5  # a successful generation takes this long at the fake
RUNS = {
    "outage": outage_load.Breaker(),  # the defaults of google_ai_settings
    "outage_base": outage_load.Breaker(after_failures=0),
}


def outage_run(fresh: Any) -> dict[str, float]:
    """``fresh(name)`` makes a migrated database and returns its URL."""
    m: dict[str, float] = {}
    for prefix, breaker in RUNS.items():
        url = fresh(f"bench_{prefix}")
        with psycopg.connect(url, autocommit=True) as db:
            out = outage_load.run(
                db, url, window_ms=WINDOW_MS, guard_ms=GUARD_MS, rpm=RPM, outage_s=OUTAGE_S,
                patience=[PATIENT] * 10 + [IMPATIENT] * 2, breaker=breaker, latency=LATENCY_S,
            )  # fmt: skip
        patient = [c for c in out.callers if c.patience == PATIENT]
        after = [c.answered_at - OUTAGE_S for c in patient if c.answered_at is not None]
        m[f"{prefix}_failed_slots"] = out.failed_attempts
        m[f"{prefix}_server_errors"] = sum(c.server_errors for c in out.callers)
        m[f"{prefix}_patient_answered"] = len(after)
        m[f"{prefix}_after_p50_s"] = statistics.median(after) if after else float("nan")
        m[f"{prefix}_after_max_s"] = max(after, default=float("nan"))
        m[f"{prefix}_429s"] = out.google_429s
        m[f"{prefix}_errors"] = len(out.errors)
        m[f"{prefix}_cooldowns"] = len(out.cooldowns)
        m[f"{prefix}_cooldown_max_s"] = max(
            (c["cooldown_ms"] / 1000 for c in out.cooldowns), default=0.0
        )
    return m


def report_line(m: dict[str, Any]) -> str:
    met = (
        m["outage_failed_slots"] <= 24
        and m["outage_patient_answered"] == 10
        and m["outage_429s"] == 0
        and m["outage_errors"] == 0
    )
    return (
        f"| Google answers 503 for {OUTAGE_S:g} s at the start of a {WINDOW_MS // 1000} s"
        f" window, {RPM} RPM; 12 WAIT callers (10 with {PATIENT:g} s of patience, 2 with"
        f" {IMPATIENT:g} s) retrying after a ServerError | {m['outage_failed_slots']:.0f} slots"
        f" on failed attempts, {m['outage_server_errors']:.0f} ServerErrors raised,"
        f" {m['outage_patient_answered']:.0f}/10 patient callers answered"
        f" {m['outage_after_p50_s']:.1f} s (p50) / {m['outage_after_max_s']:.1f} s (max) after"
        f" the outage ended; {m['outage_cooldowns']:.0f} cooldowns audited (longest"
        f" {m['outage_cooldown_max_s']:g} s); {m['outage_429s']:.0f} 429s |"
        f" without outage cooldowns: {m['outage_base_failed_slots']:.0f} slots,"
        f" {m['outage_base_server_errors']:.0f} ServerErrors,"
        f" {m['outage_base_patient_answered']:.0f}/10 answered |"
        f" ≤ 24 slots, all 10 answered, 0 429s | {'met' if met else '**not met**'} |"
    )


def main() -> None:
    from bench.run import fresh_db  # the full run's helper; imported here to run alone

    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    args = parser.parse_args()
    m = outage_run(lambda name: fresh_db(args.admin_url, name))
    print(report_line(m))


if __name__ == "__main__":
    main()
