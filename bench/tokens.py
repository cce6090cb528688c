"""Exact input-token counting: TPM utilization with it and without it, and what counting costs.

A TPM-bound WAIT load of Russian prose (1,500-6,500 real tokens per prompt) runs through the
real client against the fake Gemini, which counts with Gemma 3's vocabulary and enforces TPM
on that count, with the windows shortened to 10 s (TPM 15,000 per window, as gemma-3-27b's per
minute). It runs twice in the same bench: with the local Gemma 3 tokenizer (google-genai's
LocalTokenizer; its model rebuilt from the npm vocabulary, since Google's file cannot be
fetched here) and with the byte bound, the baseline. Utilization is what the fake charged
over windows 2..N divided by what TPM allowed.

    python -m bench.tokens --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from typing import Any

import psycopg
from google.genai import _local_tokenizer_loader as loader

import llm_limits
from bench.tpm_ceiling import Setting, ceilings
from llm_limits.local.fake_gemini import FakeGemini, Limits
from llm_limits.local.prose import page
from llm_limits.tokens import GEMMA3_SDK_MODEL, TokenCounter, estimate_tokens
from tests.gemma3_sentencepiece import rebuild, seed_sdk_cache

# The guard covers the lag from grant to arrival at the fake, as in the e2e test: on a busy
# 2-core box a 30 KB request can take longer than 100 ms to arrive.
WINDOW_S, GUARD_MS = 10.0, 300
TPM, WORKERS, LATENCY = 15_000, 6, 0.3
KEY = "bench-tokens-key-value"


def _install_gemma3() -> None:
    """Seed the SDK's cache with Gemma 3's model and pin its hash (no internet here)."""
    tempfile.tempdir = tempfile.mkdtemp(prefix="llm-limits-bench-tok-")
    # Later steps make their clusters and poolers under it; the postgres user must get in.
    os.chmod(tempfile.tempdir, 0o755)
    url, sha256 = seed_sdk_cache(rebuild())
    loader._TOKENIZERS["gemma3"] = loader._TokenizerConfig(model_url=url, model_hash=sha256)


def counting_cost(runs: int = 300) -> dict[str, float]:
    """p50 of counting one 10,000-character Russian prompt, the tokenizer already loaded."""
    counter = TokenCounter()
    prompt = page(10_000, seed=99)[:10_000]
    assert counter.local(GEMMA3_SDK_MODEL, prompt, None) is not None  # loads it

    def p50(fn: Any) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    return {
        "count_local_p50_ms": p50(lambda: counter.local(GEMMA3_SDK_MODEL, prompt, None)),
        "count_bytes_p50_ms": p50(lambda: estimate_tokens(prompt)),
    }


def _prompts(fake: FakeGemini, n: int = 80) -> list[str]:
    """Russian pages of 1,500-6,500 real tokens each (counted by the fake's vocabulary)."""
    rng = random.Random(7)
    out = []
    while len(out) < n:
        text = page(rng.randint(5_300, 22_500), seed=len(out))
        if 1_500 <= fake.counting.prompt([("user", [text])]) <= 6_500:
            out.append(text)
    return out


def _load(admin_url: str, counter: str, windows: int) -> dict[str, float]:
    from bench.run import fresh_db  # bench.run imports this module

    url = fresh_db(admin_url, f"bench_tokens_{counter}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            # Re-checks as in bench.run's utilization: the figure is about counting, not polling.
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s, "
            "wait_recheck_ms = 25",
            (int(WINDOW_S * 1000), GUARD_MS),
        )
        conn.execute(
            "update public.google_ai_model_limits set rpm = 1000, tpm = %s, rpd = 1000000, "
            "token_counter = %s where model = 'gemma-3-27b'",
            (TPM, counter),
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('tok', 'LLM_LIMITS_BENCH_TOK_KEY', 'tok-group')"
        )
    os.environ["LLM_LIMITS_BENCH_TOK_KEY"] = KEY
    limits = {"gemma-3-27b-it": Limits(rpm=1000, tpm=TPM, rpd=1_000_000)}
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    with FakeGemini({"tok-group": [KEY]}, limits, latency=LATENCY, window=WINDOW_S) as fake:
        prompts = _prompts(fake)
        # What the line could use at best with these prompts (bench.tpm_ceiling's model).
        best = ceilings(
            [fake.counting.prompt([("user", [p])]) for p in prompts],
            Setting(TPM, WINDOW_S, WINDOW_S + GUARD_MS / 1000, WORKERS, LATENCY),
        )
        stop = time.monotonic() + windows * WINDOW_S + 2  # demand never thins out
        client = llm_limits.Client(url, base_url=fake.base_url, timeout=30.0)

        def worker(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < stop:
                try:
                    client.generate("gemma-3-27b", rng.choice(prompts), max_wait=60.0)
                    outcome = "ok"
                except llm_limits.LimitsError as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        stats = fake.stats()
    grants = sorted(g for gs in stats.grants.values() for g in gs)
    start = grants[0].ts
    steady = [g.input_tokens for g in grants if WINDOW_S <= g.ts - start < windows * WINDOW_S]
    return {
        f"tok_util_{counter}": sum(steady) / (TPM * (windows - 1)),
        f"tok_429_{counter}": stats.rate_limited,
        f"tok_ok_{counter}": outcomes.get("ok", 0),
        f"tok_refused_{counter}": sum(v for k, v in outcomes.items() if k != "ok"),
        f"tok_too_large_{counter}": outcomes.get("PromptTooLarge", 0),
        **{f"tok_ceiling_{rule.replace(' ', '_')}": v for rule, v in best.items()},
    }


def token_counting(admin_url: str, windows: int = 9) -> dict[str, float]:
    _install_gemma3()
    m: dict[str, float] = {"tok_windows": windows}
    m.update(counting_cost())
    for counter in ("gemma3", "bytes"):
        m.update(_load(admin_url, counter, windows))
    return m


def section(m: dict[str, float]) -> list[str]:
    """The report's lines for this benchmark (a table of its own)."""

    def ok(cond: bool) -> str:
        return "met" if cond else "**not met**"

    exact, base = m["tok_util_gemma3"], m["tok_util_bytes"]
    return [
        "",
        f"Token counting: a TPM-bound WAIT load of Russian prose (1,500-6,500 real tokens per"
        f" prompt, {WORKERS} callers, {LATENCY} s per call) against the fake Gemini counting"
        f" with Gemma 3's vocabulary, TPM {TPM:,} per {WINDOW_S:.0f} s window, windows"
        f" 2..{m['tok_windows']:.0f} measured; the byte-bound client is the baseline.",
        "",
        "| measurement | figure | baseline (byte bound) | goal | |",
        "|---|---|---|---|---|",
        f"| TPM utilization (Google-counted tokens / TPM allowed) | {exact * 100:.1f}% |"
        f" {base * 100:.1f}% | ≥ 93%, 0 429s |"
        f" {ok(exact >= 0.93 and m['tok_429_gemma3'] == 0)} |",
        f"| 429s from the fake | {m['tok_429_gemma3']:.0f} | {m['tok_429_bytes']:.0f} | 0 |"
        f" {ok(m['tok_429_gemma3'] == 0)} |",
        f"| calls completed / refused (of which LL003 PromptTooLarge) |"
        f" {m['tok_ok_gemma3']:.0f} / {m['tok_refused_gemma3']:.0f}"
        f" ({m['tok_too_large_gemma3']:.0f}) | {m['tok_ok_bytes']:.0f} /"
        f" {m['tok_refused_bytes']:.0f} ({m['tok_too_large_bytes']:.0f}) | no LL003 | |",
        f"| the most the line could use with these prompts (`bench.tpm_ceiling`'s model):"
        f" acquire's backfill rule / strict order / best fit, order ignored |"
        f" {m['tok_ceiling_backfill'] * 100:.1f}% / {m['tok_ceiling_in_order'] * 100:.1f}% /"
        f" {m['tok_ceiling_best_fit'] * 100:.1f}% | | | |",
        f"| counting a 10,000-character Russian prompt, p50 (local tokenizer loaded) |"
        f" {m['count_local_p50_ms']:.2f} ms | {m['count_bytes_p50_ms']:.2f} ms |"
        f" ≤ ~2 ms | {ok(m['count_local_p50_ms'] <= 2.0)} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--windows", type=int, default=9)
    args = parser.parse_args()
    print("\n".join(section(token_counting(args.admin_url, args.windows))))


if __name__ == "__main__":
    main()
