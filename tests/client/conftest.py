"""Fixtures for the thin client: a real migrated database, the real SDK, the fake Gemini server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini

from .support import KEYS, Conn, hold, insert_keys, projects


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "GOOGLE_API_KEY",
        "GOOGLE_API_LOCALNAME",
        "GEMINI_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "LLM_LIMITS_DB_URL",
        "SUPABASE_DB_URL",
        "DATABASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    hold(monkeypatch, *KEYS)


@pytest.fixture
def keyed_db(db: Conn) -> Conn:
    insert_keys(db)
    return db


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(projects()) as srv:
        yield srv


@pytest.fixture
def client(keyed_db: Conn, db_url: str, fake: FakeGemini) -> Iterator[Client]:
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as c:
        yield c


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="llm_limits")  # the CLI tests may have raised it
    return caplog
