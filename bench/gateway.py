"""What the llm-gateway adds around one Google call, measured end to end on loopback.

The same prompt goes to the same local fake Gemini (no artificial latency) twice over: once
from the bare google-genai SDK with a Google key, once from the same SDK with a caller token
through the gateway, which Deno runs locally against the benchmark's database. The gateway's
share is everything it does per call: identify the caller, countTokens upstream, acquire,
the call, settle. Figures are p50 and p95 of each path, and their differences.

    python -m bench.gateway --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from google import genai
from google.genai import types

from llm_limits.cli.gateway import FUNCTION_DIR, free_port, new_token, start_local, token_digest
from llm_limits.local.fake_gemini import FakeGemini, Limits

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-gateway-key-value"
MODEL = "gemma-3-27b-it"
N = 300


def _times_ms(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times[n // 10 :])  # the first tenth warms connections and plans


def _pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(round(p / 100 * (len(sorted_ms) - 1))))]


def gateway_overhead(url: str, n: int = N) -> dict[str, float]:
    token = new_token()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('gateway-bench', 'LLM_LIMITS_BENCH_GATEWAY_KEY', 'gateway-group') "
            "on conflict (key_alias) do nothing"
        )
        conn.execute(
            "update public.google_ai_model_limits set rpm = 1000000, tpm = 1000000000, "
            "rpd = 1000000000 where model = 'gemma-3-27b'"
        )
        conn.execute("select public.add_caller('bench', %s::bytea)", (token_digest(token),))
    limits = {MODEL: Limits(1_000_000, 1_000_000_000, 1_000_000_000)}
    prompt = "Кратко перескажи правила квот Gemini API в одном предложении."
    with FakeGemini({"gateway-group": [KEY]}, limits) as srv:
        port = free_port()
        proc = start_local(
            REPO / FUNCTION_DIR,
            url,
            port=port,
            google_base_url=srv.base_url,
            extra_env={"LLM_LIMITS_BENCH_GATEWAY_KEY": KEY},
            output=subprocess.DEVNULL,
        )
        try:
            direct = genai.Client(
                api_key=KEY,
                http_options=types.HttpOptions(
                    base_url=srv.base_url, api_version="v1beta", timeout=10_000
                ),
            )
            via = genai.Client(
                api_key=token,
                http_options=types.HttpOptions(
                    base_url=f"http://127.0.0.1:{port}",
                    api_version="v1beta",
                    timeout=10_000,
                    headers={"x-llm-limits-mode": "NO_WAIT"},
                ),
            )
            bare = _times_ms(
                lambda: direct.models.generate_content(model=MODEL, contents=prompt), n
            )
            gw = _times_ms(lambda: via.models.generate_content(model=MODEL, contents=prompt), n)
            direct.close()
            via.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return {
        "gw_sdk_p50": _pct(bare, 50),
        "gw_sdk_p95": _pct(bare, 95),
        "gw_via_p50": _pct(gw, 50),
        "gw_via_p95": _pct(gw, 95),
        "gw_overhead_p50": _pct(gw, 50) - _pct(bare, 50),
        "gw_overhead_p95": _pct(gw, 95) - _pct(bare, 95),
    }


def report_line(m: dict[str, float]) -> str:
    ok = "✅" if m["gw_overhead_p50"] <= 10 else "❌"
    return (
        f"| llm-gateway overhead (Deno; caller check, countTokens, acquire, settle), p50 / p95 |"
        f" {m['gw_overhead_p50']:.2f} / {m['gw_overhead_p95']:.2f} ms (SDK direct to the fake"
        f" {m['gw_sdk_p50']:.2f} / {m['gw_sdk_p95']:.2f} ms, through the gateway"
        f" {m['gw_via_p50']:.2f} / {m['gw_via_p95']:.2f} ms) | | p50 ≤ 10 ms | {ok} |"
    )


def main() -> None:
    from bench.run import fresh_db  # the full run's helper; imported here to run alone

    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("-n", type=int, default=N)
    args = parser.parse_args()
    os.environ.pop("GOOGLE_GEMINI_BASE_URL", None)
    m = gateway_overhead(fresh_db(args.admin_url, "bench_gateway"), args.n)
    print(report_line(m))


if __name__ == "__main__":
    main()
