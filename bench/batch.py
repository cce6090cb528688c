"""llm_limits.batch at the pool's pace: 1,000 short items through the direct client to the fake.

One quota group of 100 calls per 4 s window (100 ms guard), the fake enforcing the same, fast
answers: the pool is what binds. Reported per run (median of ``runs``): wall time, items/s,
RPM use at the fake (the mean of ``window / (t[i] - t[i-100])``: 1.0 would use every slot the
instant it frees; the guard alone caps it at 4 / 4.1 = 97.6%), the same from the second window
on (the first window's calls go out unqueued, faster than the queue later hands slots out),
429s, and the memory the run keeps per item (tracemalloc, in a separate run: it slows Python).

    python -m bench.batch --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc
from typing import Any

import psycopg

from llm_limits import Client, batch
from llm_limits.local.fake_gemini import FakeGemini, Limits

N, RPM, WINDOW_MS, GUARD_MS, CONCURRENCY = 1000, 100, 4000, 100, 8
MODEL, WARM_UP = "bench-batch", "bench-batch-warm-up"
KEY = "bench-batch-key-value"


def _setup(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('batch-bench', 'LLM_LIMITS_BENCH_BATCH_KEY', 'batch-group') "
            "on conflict (key_alias) do nothing"
        )
        for model, rpm in ((MODEL, RPM), (WARM_UP, 1000)):
            conn.execute(
                "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd, "
                "token_counter) values (%s, %s, %s, 1000000000, 1000000000, 'bytes') "
                "on conflict (model) do nothing",
                (model, model, rpm),
            )
        conn.execute(
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
            (WINDOW_MS, GUARD_MS),
        )


def _use(times: list[float], skip: int = 0) -> float:
    t = sorted(times)
    gaps = [t[i] - t[i - RPM] for i in range(RPM + skip, len(t))]
    return (WINDOW_MS / 1000) / statistics.mean(gaps)


def _one(url: str, trace: bool) -> dict[str, float]:
    limits = {MODEL: Limits(RPM, 10**9, 10**9), WARM_UP: Limits(1000, 10**9, 10**9)}
    items = [(f"item-{i}", f"Summarise row {i} in five words") for i in range(N)]
    fake = FakeGemini({"batch-group": [KEY]}, limits, window=WINDOW_MS / 1000, vocabulary=False)
    with fake, Client(url, base_url=fake.base_url) as client:
        client.generate(WARM_UP, "warm-up", mode="NO_WAIT")
        if trace:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if trace else 0
        t0 = time.monotonic()
        results = batch(items, model=MODEL, client=client, caller=f"bench-{time.time_ns()}",
                        db_url=url, concurrency=CONCURRENCY, progress=False)  # fmt: skip
        wall = time.monotonic() - t0
        kept = (tracemalloc.get_traced_memory()[0] - before) if trace else 0
        if trace:
            tracemalloc.stop()
        stats = fake.stats()
    times = [g.ts for g in stats.grants.get(("batch-group", MODEL), [])]
    return {
        "wall": wall,
        "ok": sum(r.ok for r in results),
        "use": _use(times),
        "use_steady": _use(times, RPM),
        "429s": stats.rate_limited,
        "bytes_per_item": kept / N,
    }


def batch_run(url: str, runs: int = 3) -> dict[str, float]:
    os.environ["LLM_LIMITS_BENCH_BATCH_KEY"] = KEY
    _setup(url)
    measured: list[dict[str, float]] = []
    for _ in range(runs):
        measured.append(_one(url, trace=False))
        time.sleep((WINDOW_MS + GUARD_MS) / 1000)  # the next run starts with an empty window
    memory = _one(url, trace=True)

    def median(key: str) -> float:
        return statistics.median(m[key] for m in measured)

    return {
        "batch_runs": runs,
        "batch_wall_s": median("wall"),
        "batch_items_per_s": N / median("wall"),
        "batch_rpm_use": median("use"),
        "batch_rpm_use_min": min(m["use"] for m in measured),
        "batch_rpm_use_steady": median("use_steady"),
        "batch_429s": sum(m["429s"] for m in measured),
        "batch_not_ok": sum(N - m["ok"] for m in measured),
        "batch_bytes_per_item": memory["bytes_per_item"],
    }


def report_line(m: dict[str, Any]) -> str:
    ok = "met" if m["batch_rpm_use_min"] >= 0.95 and m["batch_429s"] == 0 else "**not met**"
    return (
        f"| llm_limits.batch, {N:,} items, {RPM} calls per {WINDOW_MS / 1000:g} s window"
        f" (+{GUARD_MS} ms guard), concurrency {CONCURRENCY}: RPM use at the fake, median (min)"
        f" of {m['batch_runs']:.0f} runs | {m['batch_rpm_use'] * 100:.1f}%"
        f" ({m['batch_rpm_use_min'] * 100:.1f}%); from the second window on"
        f" {m['batch_rpm_use_steady'] * 100:.1f}%; {m['batch_wall_s']:.1f} s,"
        f" {m['batch_items_per_s']:.1f} items/s; {m['batch_429s']:.0f} 429s,"
        f" {m['batch_not_ok']:.0f} items not ok; {m['batch_bytes_per_item']:.0f} bytes kept per"
        f" item | | ≥ 95%, 0 429s | {ok} |"
    )


def main() -> None:
    from bench.run import fresh_db  # the full run's helper; imported here to run alone

    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("GOOGLE_GEMINI_BASE_URL", None)
    m = batch_run(fresh_db(args.admin_url, "bench_batch"), args.runs)
    print(report_line(m))


if __name__ == "__main__":
    main()
