"""A Google outage at the start of a minute, as a bot's users meet it.

``run`` starts the local fake Gemini answering 503 to every generateContent call for
``outage_s`` seconds, and at the same moment one real client per entry of ``patience`` sets out
to get one answer from gemma-3-27b within that many seconds: it calls ``generate`` with WAIT and
``max_wait`` = the patience left, and calls again after a ``ServerError`` (the way a bot retries
a user's message), until it is answered or the pool refuses it (its wait would outlast the
patience). One key, one quota group of ``rpm`` per window. ``outage_after_failures`` = 0 runs
without outage cooldowns (the baseline). It returns what the callers saw and what the fake
counted. ``tests/client/test_outage.py`` asserts on it at a scaled-down size; ``make bench``
(bench/outage.py) reports it at full size.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from google.genai import errors as genai_errors

from llm_limits import Client, RateLimited
from llm_limits.local.fake_gemini import FakeGemini, Limits

MODEL, API_MODEL = "gemma-3-27b", "gemma-3-27b-it"
WARM_UP_MODEL = "gemini-2.5-flash"
KEY_ALIAS, KEY_VAR, KEY_VALUE = "ol-key", "LLT_OUTAGE_KEY", "AIzaFAKEol-5e2c7a9b1d4f6a8c0e3b5d7f"
GROUP = "ol-proj"
Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Caller:
    patience: float
    answered_at: float | None  # seconds after the outage began; None: not answered
    server_errors: int  # generate calls that raised a ServerError
    refused: str | None  # the pool's reason when it gave up


@dataclass(frozen=True)
class Outcome:
    callers: list[Caller]
    failed_attempts: int  # 5xx the fake answered: each one a granted slot, spent
    answered_calls: int  # 200s the fake answered
    google_429s: int
    cooldowns: list[dict[str, Any]]  # the outage_cooldown audit records' details, in order
    ended: list[dict[str, Any]]  # outage_ended
    errors: list[str]  # anything the callers did not expect


@dataclass(frozen=True)
class Breaker:
    """google_ai_settings' outage columns (and the pause settle asks for after a 5xx)."""

    after_failures: int = 3
    cooldown_ms: int = 1000
    cooldown_max_ms: int = 8000
    retry_backoff_ms: int = 500


def prepare(db: Conn, window_ms: int, guard_ms: int, rpm: int, breaker: Breaker) -> None:
    """One key in its own group; the model's RPM binds; the byte bound counts at once (no
    tokenizer download on a client's first call)."""
    db.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)"
        " values (%s, %s, %s)",
        (KEY_ALIAS, KEY_VAR, GROUP),
    )
    db.execute(
        "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s,"
        " retry_backoff_ms = %s, outage_after_failures = %s, outage_cooldown_ms = %s,"
        " outage_cooldown_max_ms = %s",
        (window_ms, guard_ms, breaker.retry_backoff_ms, breaker.after_failures,
         breaker.cooldown_ms, breaker.cooldown_max_ms),
    )  # fmt: skip
    db.execute("update public.google_ai_model_limits set rpm = %s, tpm = null,"
               " token_counter = 'bytes' where model = %s", (rpm, MODEL))  # fmt: skip
    db.execute("update public.google_ai_model_limits set rpm = 1000, rpd = 10000 where model = %s",
               (WARM_UP_MODEL,))  # fmt: skip


def run(
    db: Conn, url: str, *, window_ms: int, guard_ms: int, rpm: int, outage_s: float,
    patience: list[float], breaker: Breaker, latency: float = 0.0,
) -> Outcome:  # fmt: skip
    prepare(db, window_ms, guard_ms, rpm, breaker)
    os.environ[KEY_VAR] = KEY_VALUE
    limits = {
        API_MODEL: Limits(rpm=rpm, tpm=10_000_000, rpd=100_000),
        WARM_UP_MODEL: Limits(rpm=1000, tpm=10_000_000, rpd=10_000),
    }
    errors: list[str] = []
    seen: list[Caller | None] = [None] * len(patience)
    start = threading.Event()
    with FakeGemini({GROUP: [KEY_VALUE]}, limits, window=window_ms / 1000,
                    latency=latency) as srv:  # fmt: skip
        clients = [Client(url, base_url=srv.base_url, timeout=30.0) for _ in patience]
        for c in clients:  # keys and SDK clients ready before the outage starts
            c.generate(WARM_UP_MODEL, "warm-up", mode="NO_WAIT")
        srv.reset()
        began = 0.0

        def caller(i: int) -> None:
            start.wait()
            deadline, server_errors, refused = began + patience[i], 0, None
            answered_at = None
            while answered_at is None and refused is None:
                left = max(0.0, deadline - time.monotonic())
                try:
                    clients[i].generate(MODEL, f"Сообщение {i}", mode="WAIT", max_wait=left)
                    answered_at = time.monotonic() - began
                except genai_errors.ServerError:
                    server_errors += 1
                except RateLimited as exc:
                    refused = exc.reason
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    refused = "error"
            seen[i] = Caller(patience[i], answered_at, server_errors, refused)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(patience))]
        for t in threads:
            t.start()
        srv.outage(outage_s)
        began = time.monotonic()
        start.set()
        for t in threads:
            t.join(timeout=max(patience) + 60)
        for c in clients:
            c.close()
        stats = srv.stats()

    def details(event: str) -> list[dict[str, Any]]:
        rows = db.execute(
            "select details from public.google_ai_audit_log where event = %s order by ts, id",
            (event,),
        ).fetchall()
        return [r[0] for r in rows]

    return Outcome(
        callers=[c for c in seen if c is not None],
        failed_attempts=sum(n for status, n in stats.errors.items() if status >= 500),
        answered_calls=stats.ok,
        google_429s=stats.rate_limited,
        cooldowns=details("outage_cooldown"),
        ended=details("outage_ended"),
        errors=errors,
    )
