"""`llm-limits generate`: one call through llm_limits.Client against a fake Gemini."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from llm_limits.local.fake_gemini import FakeGemini
from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]
KEY = "fake-key-for-generate"


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini({"gen-project": [KEY]}) as server:
        yield server


def test_generate_prints_the_reply_and_commits(cli: Invoke, db: Conn, fake: FakeGemini) -> None:
    cli("keys", "add", "gen-1", "--env-var", "LLT_GEN_KEY", "--group", "gen-project")
    env = {"LLT_GEN_KEY": KEY, "GOOGLE_API_KEY": None, "GOOGLE_API_LOCALNAME": None}
    result = cli("generate", "gemma-3-27b", "hello there", "--base-url", fake.base_url, env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "fake reply to: hello there"
    assert "key gen-1" in result.stderr
    assert KEY not in result.output
    assert db.execute("select status, caller from public.google_ai_reservations").fetchall() == [
        ("committed", "llm-limits-cli")
    ]


def test_no_wait_refusal_is_one_line_and_exit_2(cli: Invoke, fake: FakeGemini) -> None:
    cli("keys", "add", "gen-1", "--env-var", "LLT_GEN_KEY", "--group", "gen-project")
    cli("models", "set", "gemma-3-27b", "--rpm", "1")
    env = {"LLT_GEN_KEY": KEY, "GOOGLE_API_KEY": None, "GOOGLE_API_LOCALNAME": None}
    args = ("generate", "gemma-3-27b", "hi", "--no-wait", "--base-url", fake.base_url)
    assert cli(*args, env=env).exit_code == 0
    refused = cli(*args, env=env)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith("error: rate limited (rpm; retry after")
    assert fake.stats().rate_limited == 0


def test_a_blocked_end_user_is_one_line_and_exit_2(cli: Invoke, fake: FakeGemini) -> None:
    cli("keys", "add", "gen-1", "--env-var", "LLT_GEN_KEY", "--group", "gen-project")
    cli("end-users", "block", "tg:5")
    env = {"LLT_GEN_KEY": KEY, "GOOGLE_API_KEY": None, "GOOGLE_API_LOCALNAME": None}
    args = ("generate", "gemma-3-27b", "hi", "--base-url", fake.base_url)
    refused = cli(*args, "--end-user", "tg:5", env=env)
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.strip() == "error: rate limited (end_user_limit)"
    assert cli(*args, "--end-user", "tg:6", env=env).exit_code == 0
    assert fake.stats().requests == 1
