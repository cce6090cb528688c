"""Fixtures of the fault tests: the client tests' key pool on a fresh migrated database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_limits.fake_gemini import FakeGemini
from tests.client.support import KEYS, Conn, hold, insert_keys, projects

URL_VARS = (
    "GOOGLE_API_KEY",
    "GOOGLE_API_LOCALNAME",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "LLM_LIMITS_DB_URL",
    "SUPABASE_DB_URL",
    "DATABASE_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in URL_VARS:
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
