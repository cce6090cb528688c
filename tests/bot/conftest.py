"""The Telegram bot (examples/telegram_bot) on a real client, through PgBouncer, at the fake.

Time is scaled: 3 s windows (+100 ms guard) with gemma-3-27b at one request per window, so a
second person's question waits about 3 s and a third's about 6 s; WAIT slices of 500 ms, so a
waiter is told its place every half second once it heads the line. The interactive class does
not fall back to 12b here, so a wait is a wait. Telegram is the recording session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiogram import Bot, Dispatcher

from examples.telegram_bot import bot as telegram_bot
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.client.conftest import clean_env
from tests.client.support import GEMMA, KEYS, Conn, projects, set_window
from tests.conftest import pooled

from .recording_session import RecordingSession

__all__ = ["clean_env"]

WINDOW_MS, GUARD_MS, SLICE_MS = 3000, 100, 500
KEY = "a1"
MAX_WAIT = 20.0


@pytest.fixture
def bot_db(db: Conn) -> Conn:
    """One key (one Google project), the scaled window, gemma-3-27b at 1 request a window (its
    tokens counted as bytes: no tokenizer download), and telegram-bot in class interactive,
    with no fallback."""
    var, group, _ = KEYS[KEY]
    db.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)"
        " values (%s, %s, %s)",
        (KEY, var, group),
    )
    set_window(db, WINDOW_MS, GUARD_MS)
    db.execute("update public.google_ai_settings set wait_slice_ms = %s", (SLICE_MS,))
    db.execute(
        "update public.google_ai_model_limits set rpm = 1, tpm = 100000,"
        " token_counter = 'bytes' where model = %s",
        (GEMMA,),
    )
    db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class)"
        " values (%s, 'interactive')",
        (telegram_bot.CALLER,),
    )
    db.execute("update public.google_ai_caller_classes set may_fall_back = false")
    return db


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    """Google with gemma-3-27b's limits on the same window (10 a window: the database binds
    first, so a 429 here is a bug)."""
    limits = {"gemma-3-27b-it": Limits(rpm=10, tpm=1_000_000, rpd=10_000)}
    with FakeGemini(projects(), limits, window=WINDOW_MS / 1000) as srv:
        yield srv


@pytest.fixture
async def llm(bot_db: Conn, db_url: str, fake: FakeGemini) -> AsyncIterator[Client]:
    async with Client(pooled(db_url), base_url=fake.base_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def telegram() -> RecordingSession:
    return RecordingSession()


@pytest.fixture
def bot(telegram: RecordingSession) -> Bot:
    return telegram.bot()


@pytest.fixture
def dispatcher(llm: Client) -> Dispatcher:
    return telegram_bot.build_dispatcher(llm, max_wait=MAX_WAIT)
