"""Settling when a call breaks off: before the request, during it, and after it."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from google.genai import models, types

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini

from .support import GEMMA, Conn, audit, reservations


def test_keyboard_interrupt_during_the_call_releases_it_as_sent(
    client: Client, keyed_db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(models.Models, "generate_content", interrupted)

    with pytest.raises(KeyboardInterrupt):
        client.generate(GEMMA, "hello")

    [res] = reservations(keyed_db)
    assert (res["status"], res["counted_requests"]) == ("released", 1)
    assert audit(keyed_db, "released")[0]["reason"] == "cancelled"


def test_a_request_the_sdk_cannot_build_is_refunded(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    with pytest.raises(ValueError, match="validation error"):
        client.generate(GEMMA, [object()])

    assert fake.stats().requests == 0
    [res] = reservations(keyed_db)
    assert (res["status"], res["counted_requests"], res["counted_tokens"]) == ("released", 0, 0)
    [released] = audit(keyed_db, "released")
    assert released["sent"] is False and released["refunded"] is True


def test_a_lost_database_after_the_call_still_returns_the_answer(
    client: Client,
    keyed_db: Conn,
    db_url: str,
    fake: FakeGemini,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.hang(1.0)
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["response"] = client.generate(GEMMA, "hello")
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5.0
    while fake.stats().requests == 0:  # granted, and the request is at the server
        assert time.monotonic() < deadline
        time.sleep(0.01)
    dbname = keyed_db.info.dbname
    with psycopg.connect(db_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'alter database "{dbname}" allow_connections false')
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s",
            (dbname,),
        )
        try:
            thread.join(timeout=30)
        finally:
            admin.execute(f'alter database "{dbname}" allow_connections true')
    keyed_db = psycopg.connect(db_url, autocommit=True)

    assert "error" not in result, result.get("error")
    response: types.GenerateContentResponse = result["response"]
    assert response.text == "fake reply to: hello"
    assert "settle failed" in caplog.text
    # The grant stays counted at its estimate until its lease expires.
    [res] = reservations(keyed_db)
    assert res["status"] == "reserved" and res["counted_tokens"] == res["estimated_tokens"]
    keyed_db.close()


def test_database_unavailable_is_a_limits_error() -> None:
    assert issubclass(llm_limits.DatabaseUnavailable, llm_limits.DatabaseError)
    assert issubclass(llm_limits.DatabaseError, llm_limits.LimitsError)
