"""Learned limits fix themselves by default (learn_limits = 'apply').

Tried as a user would: a quota group configured above what Google enforces (the fake Gemini's
real TPM or RPM) gave a 429 in every window while learn_limits was 'suggest'. Now the first
429's quotaValue lowers the group's limit (audited as limit_observed and as a config change,
shown by `llm-limits status`), and the callers keep to it: a wrong limit costs one 429 per
limit and quota group. Calls go back to back through the real SDK for two and a half windows
of 4 s (time scaled down from 60 s), counted with countTokens (the fake's own count).

With several callers, each call already on its way when the first 429 comes back may meet one
more; that is the bound the concurrent test checks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from llm_limits import Client
from llm_limits.cli.app import app
from llm_limits.local.fake_gemini import FakeGemini, Limits

from .support import GEMMA, Conn, audit, hold, projects, set_window

WINDOW_MS, GUARD_MS = 4000, 500  # a wide guard: a busy machine delays calls to the fake
RUN_S = 2.5 * WINDOW_MS / 1000
PROMPT = "Что сегодня в программе фестиваля?"


@pytest.fixture
def prompt_tokens() -> int:
    return FakeGemini({}, vocabulary=True).counting.prompt([("user", [PROMPT])])


def start_fake(real: Limits) -> FakeGemini:
    return FakeGemini(projects(), {"gemma-3-27b-it": real}, window=WINDOW_MS / 1000).start()


@pytest.fixture
def pool(keyed_db: Conn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Conn]:
    """One project (proj-a, key a1) held; counted with countTokens upstream."""
    hold(monkeypatch, "a1")
    set_window(keyed_db, WINDOW_MS, GUARD_MS)
    keyed_db.execute(
        "update public.google_ai_model_limits set token_counter = 'count_tokens' where model = %s",
        (GEMMA,),
    )
    yield keyed_db


def call_back_to_back(db_url: str, fake: FakeGemini, callers: int) -> list[str]:
    """Each caller calls until RUN_S is over; returns what went wrong (nothing, we hope)."""
    stop = time.monotonic() + RUN_S
    problems: list[str] = []

    def caller() -> None:
        with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
            while time.monotonic() < stop:
                try:
                    client.generate(GEMMA, PROMPT, mode="WAIT", max_wait=10.0)
                except Exception as exc:
                    problems.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=RUN_S + 30)
    return problems


def group_limits(db: Conn) -> tuple[Any, ...] | None:
    return db.execute(
        "select rpm, tpm from public.google_ai_group_limits where quota_group = 'proj-a'"
    ).fetchone()


@pytest.mark.parametrize("dimension", ["tpm", "rpm"])
def test_a_limit_above_googles_costs_one_429(
    pool: Conn, db_url: str, prompt_tokens: int, dimension: str
) -> None:
    # Google allows 8 calls a window by this dimension; the table says 13.
    if dimension == "tpm":
        real = Limits(rpm=1000, tpm=8 * prompt_tokens + prompt_tokens // 2, rpd=10_000)
        pool.execute("update public.google_ai_model_limits set rpm = 1000, tpm = %s"
                     " where model = %s", (13 * prompt_tokens, GEMMA))  # fmt: skip
    else:
        real = Limits(rpm=8, tpm=10_000_000, rpd=10_000)
        pool.execute("update public.google_ai_model_limits set rpm = 13, tpm = null"
                     " where model = %s", (GEMMA,))  # fmt: skip
    fake = start_fake(real)
    try:
        assert call_back_to_back(db_url, fake, callers=1) == []
        stats = fake.stats()
    finally:
        fake.stop()

    assert stats.rate_limited == 1, stats.summary()
    assert stats.ok >= 16, stats.summary()  # the later windows were used, up to the real limit
    want = (None, real.tpm) if dimension == "tpm" else (real.rpm, None)
    assert group_limits(pool) == want
    [observed] = audit(pool, "limit_observed")
    assert (observed["dimension"], observed["applied"], observed["learn_limits"]) == (
        dimension, True, "apply"
    )  # fmt: skip
    [change] = [c for c in audit(pool, "config_changed") if c["table"] == "google_ai_group_limits"]
    assert change["new"][dimension] == getattr(real, dimension)
    status = CliRunner().invoke(app, ["status", "--db-url", db_url])
    assert status.exit_code == 0, status.output
    assert "limits Google reported  (learn_limits = apply)" in status.stdout
    real_value = getattr(real, dimension)
    assert (
        f"proj-a · {GEMMA} · {dimension.upper()}: Google says {real_value}, the table says"
        f" {real_value} (applied; seen 1x"
    ) in status.stdout


def test_with_callers_in_flight_each_meets_one_429_at_most(
    pool: Conn, db_url: str
) -> None:  # fmt: skip
    callers = 4
    real = Limits(rpm=8, tpm=10_000_000, rpd=10_000)
    pool.execute("update public.google_ai_model_limits set rpm = 20, tpm = null where model = %s",
                 (GEMMA,))  # fmt: skip
    fake = start_fake(real)
    try:
        assert call_back_to_back(db_url, fake, callers=callers) == []
        stats = fake.stats()
    finally:
        fake.stop()

    assert 1 <= stats.rate_limited <= callers, stats.summary()
    assert group_limits(pool) == (8, None)
    # Every 429 was for a call granted before the first one was settled.
    first_settled = pool.execute(
        "select min(settled_at) from public.google_ai_reservations where status = 'rate_limited'"
    ).fetchone()
    late = pool.execute(
        "select count(*) from public.google_ai_reservations"
        " where status = 'rate_limited' and granted_at > %s",
        first_settled,
    ).fetchone()
    assert late == (0,)
