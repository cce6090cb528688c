"""A key value never appears in a log record, an exception, a repr, or any table."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest
from google.genai import types

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini

from .support import GEMMA, KEY_VALUES, KEYS, Conn, hold, projects


def exception_texts(exc: BaseException | None) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc), repr(getattr(exc, "args", ()))]
        exc = exc.__cause__ or exc.__context__
    return texts


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    texts: list[str] = []
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            texts += exception_texts(record.exc_info[1])
    return texts


def dump_every_table(db: Conn) -> list[str]:
    tables = db.execute(
        "select format('%I.%I', n.nspname, c.relname) from pg_catalog.pg_class as c "
        "join pg_catalog.pg_namespace as n on n.oid = c.relnamespace "
        "where c.relkind in ('r', 'p') "
        "and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
    ).fetchall()
    assert len(tables) >= 10
    out: list[str] = []
    for (table,) in tables:
        out += [row[0] for row in db.execute(f"select t::text from {table} as t").fetchall()]
    return out


def test_no_key_value_leaks_anywhere(
    keyed_db: Conn,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    errors: list[BaseException] = []

    def expect_error(call: object) -> None:
        try:
            call()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - every kind is inspected below
            errors.append(exc)
        else:
            raise AssertionError("expected an error")

    invalid = KEYS["a1"][2]
    with FakeGemini(projects(), invalid_keys=[invalid]) as srv:
        client = Client(db_url, base_url=srv.base_url, timeout=0.5)
        reprs = [repr(client)]
        hold(monkeypatch, "a2", "b1")
        client.generate(GEMMA, "plain success", caller="leak-test")
        srv.inject(429)
        client.generate(GEMMA, "after a 429")
        srv.inject(503)
        client.generate(GEMMA, "after a 503")
        srv.hang(2.0)
        client.generate(GEMMA, "after a timeout")
        srv.inject(500, count=3)
        expect_error(lambda: client.generate(GEMMA, "three 500s"))
        config = types.GenerateContentConfig(system_instruction="sys")
        asyncio.run(client.agenerate(GEMMA, "async with system text", config=config))
        reprs.append(repr(client))
        client.close()

        hold(monkeypatch, "a1")  # the invalid key: rejected and disabled
        client = Client(db_url, base_url=srv.base_url)
        expect_error(lambda: client.generate(GEMMA, "invalid key"))
        expect_error(lambda: client.generate(GEMMA, "no key left"))
        reprs.append(repr(client))
        client.close()

        monkeypatch.setenv("GOOGLE_API_KEY", KEYS["b1"][2])
        monkeypatch.setenv("GOOGLE_API_LOCALNAME", "b1")
        keyed_db.execute("update public.google_ai_model_limits set rpm = 0")
        client = Client(db_url, base_url=srv.base_url)
        expect_error(lambda: client.generate(GEMMA, "refused", mode="NO_WAIT"))
        reprs.append(repr(client))
        client.close()

    broken = Client("postgresql://postgres@127.0.0.1:1/nothing", connect_timeout=2)
    expect_error(lambda: broken.generate(GEMMA, "no database"))
    reprs.append(repr(broken))

    kinds = {type(e).__name__ for e in errors}
    assert {"ServerError", "ClientError", "NoKeyAvailable", "RateLimited"} <= kinds
    assert "DatabaseUnavailable" in kinds
    haystack = (
        record_texts(debug_logs.records)
        + [t for e in errors for t in exception_texts(e)]
        + reprs
        + dump_every_table(keyed_db)
    )
    assert len(debug_logs.records) > 10
    for value in KEY_VALUES:
        leaks = [text for text in haystack if value in text]
        assert leaks == [], f"a key value leaked into: {leaks[:3]}"
    # and the key's alias did reach the places that name keys
    assert any("a2" in text for text in dump_every_table(keyed_db))


def test_repr_hides_the_database_password() -> None:
    client = Client("postgresql://postgres:hunter2secret@db.example.com:6543/postgres")
    assert "hunter2secret" not in repr(client)
    assert "db.example.com:6543/postgres" in repr(client)


def test_exceptions_of_the_client_never_carry_values(keyed_db: Conn, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("update public.google_ai_api_keys set is_active = false")
    with Client(db_url) as client, pytest.raises(llm_limits.NoKeyAvailable) as info:
        client.generate(GEMMA, "hello")
    assert not any(v in t for v in KEY_VALUES for t in exception_texts(info.value))
