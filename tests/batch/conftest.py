"""Fixtures of the batch runner's tests: a migrated database with the client tests' keys, a
model of the test's own limits, and the fake Gemini enforcing the same limits."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from llm_limits.local.fake_gemini import FakeGemini, Limits

from ..client.support import KEYS, Conn, hold, insert_keys, projects, set_window

MODEL = "batch-model"
# A cold process spends a few hundred ms between its first grant and its first request (the
# SDK's and the connections' set-up), more than a short test guard: warm up on this one first.
WARM_UP = "batch-warm-up"
BIG = 10**9

MakeFake = Callable[..., FakeGemini]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GOOGLE_API_KEY", "GOOGLE_API_LOCALNAME", "GOOGLE_GEMINI_BASE_URL",
                "LLM_LIMITS_DB_URL", "SUPABASE_DB_URL", "DATABASE_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    hold(monkeypatch, *KEYS)


def add_batch_model(
    db: Conn,
    rpm: int,
    *,
    tpm: int = BIG,
    rpd: int = BIG,
    window_ms: int = 60000,
    guard_ms: int = 1000,
) -> None:
    """The model the batches call: counted in bytes (no tokenizer download), these limits."""
    for model, limit in ((MODEL, rpm), (WARM_UP, 1000)):
        db.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd, "
            "token_counter) values (%s, %s, %s, %s, %s, 'bytes')",
            (model, model, limit, min(tpm, 2**31 - 1), min(rpd, 2**31 - 1)),
        )
    set_window(db, window_ms, guard_ms)


@pytest.fixture
def keyed_db(db: Conn) -> Conn:
    insert_keys(db)
    return db


@pytest.fixture
def make_fake() -> Iterator[MakeFake]:
    started: list[FakeGemini] = []

    def make(rpm: int, *, tpm: int = BIG, rpd: int = BIG, window_s: float = 60.0,
             latency: float = 0.0) -> FakeGemini:  # fmt: skip
        limits = {MODEL: Limits(rpm, tpm, rpd), WARM_UP: Limits(1000, BIG, BIG)}
        fake = FakeGemini(
            projects(), limits, window=window_s, latency=latency,
            vocabulary=False,
        )  # fmt: skip
        started.append(fake.start())
        return fake

    yield make
    for fake in started:
        fake.stop()
