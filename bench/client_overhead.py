"""What the client adds around one Google call: acquire + commit, measured in-process.

The same prompt goes to the same local fake Gemini server (no artificial latency) twice
over: once through the bare google-genai SDK, once through ``llm_limits.Client``. The
difference of the medians is the client's overhead (two RPC round trips, the token
estimate, logging).
"""

from __future__ import annotations

import os
import statistics
import time

import psycopg
from google import genai
from google.genai import types

import llm_limits
from llm_limits.local.fake_gemini import FakeGemini, Limits

KEY = "bench-overhead-key-value"
N = 300


def _median_ms(fn: object, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[n // 10 :])


def client_overhead(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('overhead', 'LLM_LIMITS_BENCH_KEY', 'overhead-group') "
            "on conflict (key_alias) do nothing"
        )
        conn.execute(
            "update public.google_ai_model_limits set rpm = 1000000, tpm = 1000000000, "
            "rpd = 1000000000 where model = 'gemma-3-27b'"
        )
    os.environ["LLM_LIMITS_BENCH_KEY"] = KEY
    limits = {"gemma-3-27b-it": Limits(1_000_000, 1_000_000_000, 1_000_000_000)}
    with FakeGemini({"overhead-group": [KEY]}, limits) as srv:
        options = types.HttpOptions(base_url=srv.base_url, api_version="v1beta", timeout=10_000)
        sdk = genai.Client(api_key=KEY, http_options=options)
        client = llm_limits.Client(url, base_url=srv.base_url)
        prompt = "Summarise the quota rules of the Gemini API in one sentence."

        def bare() -> None:
            sdk.models.generate_content(model="gemma-3-27b-it", contents=prompt)

        def wrapped() -> None:
            client.generate("gemma-3-27b", prompt, mode="NO_WAIT")

        bare_ms = _median_ms(bare, N)
        wrapped_ms = _median_ms(wrapped, N)
        client.close()
        sdk.close()
    return {
        "sdk_call_ms": bare_ms,
        "client_call_ms": wrapped_ms,
        "client_overhead_ms": wrapped_ms - bare_ms,
    }
