"""The bot among the notebooks: one pool, a saturating batch and an interactive caller.

``run`` drives ``batch_workers`` real clients of class ``batch`` calling back to back with WAIT,
and (``bot=True``) one ``interactive`` client calling every ``bot_every`` seconds, all through
``url`` (a transaction pooler in the tests) against the local fake Gemini, on one quota group of
``rpm``. It returns what the database recorded: the bot's waits (waited_ms), every grant's time
and caller, and the bot's refusals. ``tests/policy`` asserts on it at a scaled-down size;
``make bench`` (bench/policy.py) reports it at full size.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from llm_limits import Client, RateLimited
from llm_limits.local.fake_gemini import FakeGemini, Limits

MODEL, API_MODEL = "gemma-3-27b", "gemma-3-27b-it"
WARM_UP_MODEL = "gemini-2.5-flash"
KEY_ALIAS, KEY_VAR, KEY_VALUE = "pl-key", "LLT_POLICY_KEY", "AIzaFAKEpl-3c1e5a7b9d2f4a6c8e0b1d3f"
BOT, BATCH = "telegram-bot", "festival-parser"


@dataclass(frozen=True)
class Outcome:
    bot_waits_ms: list[int]
    bot_calls_s: list[float]
    bot_refusals: int
    grants: list[tuple[datetime, str]]  # (granted_at, caller), in grant order
    google_429s: int
    errors: list[str]


def prepare(db: psycopg.Connection[tuple[object, ...]], window_ms: int, guard_ms: int,
            rpm: int, rpm_reserve: float) -> None:  # fmt: skip
    """One key, one group; the model's RPM binds (the byte bound counts at once: no tokenizer
    download on each client's first call); the bot interactive, the notebook batch."""
    db.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)"
        " values (%s, %s, 'pl-proj')",
        (KEY_ALIAS, KEY_VAR),
    )
    db.execute("update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
               (window_ms, guard_ms))  # fmt: skip
    db.execute("update public.google_ai_model_limits set rpm = %s, tpm = null,"
               " token_counter = 'bytes' where model = %s", (rpm, MODEL))  # fmt: skip
    db.execute("update public.google_ai_model_limits set rpm = 1000, rpd = 10000 where model = %s",
               (WARM_UP_MODEL,))  # fmt: skip
    db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class) values"
        " (%s, 'interactive'), (%s, 'batch')",
        (BOT, BATCH),
    )
    db.execute(
        "update public.google_ai_caller_classes set rpm_reserve = %s where name = 'interactive'",
        (rpm_reserve,),
    )


def run(
    db: psycopg.Connection[tuple[object, ...]], url: str, *, window_ms: int, guard_ms: int,
    rpm: int, batch_workers: int, bot_every: float, duration: float, rpm_reserve: float,
    bot: bool,
) -> Outcome:  # fmt: skip
    prepare(db, window_ms, guard_ms, rpm, rpm_reserve)
    os.environ[KEY_VAR] = KEY_VALUE
    limits = {
        API_MODEL: Limits(rpm=rpm, tpm=10_000_000, rpd=100_000),
        WARM_UP_MODEL: Limits(rpm=1000, tpm=10_000_000, rpd=10_000),
    }
    stop = threading.Event()
    bot_calls: list[float] = []
    refusals: list[int] = []
    errors: list[str] = []
    with FakeGemini({"pl-proj": [KEY_VALUE]}, limits, window=window_ms / 1000) as srv:
        clients = [Client(url, base_url=srv.base_url, caller=BATCH) for _ in range(batch_workers)]
        bot_client = Client(url, base_url=srv.base_url, caller=BOT)
        for c in [*clients, bot_client]:  # keys and SDK clients ready before the clock starts
            c.generate(WARM_UP_MODEL, "warm-up", mode="NO_WAIT")

        def batch(client: Client) -> None:
            while not stop.is_set():
                try:
                    client.generate(MODEL, "Разбери страницу фестиваля.", max_wait=120.0)
                except RateLimited:
                    pass
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        def the_bot() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    bot_client.generate(MODEL, "Привет! Что сегодня в программе?", max_wait=60.0)
                except RateLimited:
                    refusals.append(1)
                bot_calls.append(time.monotonic() - started)
                stop.wait(max(0.0, bot_every - (time.monotonic() - started)))

        threads = [threading.Thread(target=batch, args=(c,)) for c in clients]
        if bot:
            bot_thread = threading.Thread(target=the_bot)
            bot_thread.start()
            time.sleep(0.2)  # the bot is active before the flood starts
            threads.append(bot_thread)
        for t in threads[: len(clients)]:
            t.start()
        time.sleep(duration)
        stop.set()
        for t in threads:
            t.join(timeout=180)
        for c in [*clients, bot_client]:
            c.close()
        google_429s = srv.stats().rate_limited

    waits = [
        int(r[0])  # type: ignore[call-overload]
        for r in db.execute(
            "select waited_ms from public.google_ai_reservations"
            " where caller = %s and status = 'committed' and model = %s",
            (BOT, MODEL),
        ).fetchall()
    ]
    grants = [
        (r[0], str(r[1]))
        for r in db.execute(
            "select granted_at, caller from public.google_ai_reservations where model = %s"
            " order by granted_at",
            (MODEL,),
        ).fetchall()
    ]
    return Outcome(waits, bot_calls, len(refusals), grants, google_429s, errors)  # type: ignore[arg-type]
