"""Waiters on a psycopg_pool pool never hold a pool connection while they sleep.

Three callers WAIT on one client whose pool has two connections, for key b1's only slot (RPM 1,
window 3 s + 100 ms guard), which another caller holds. While they wait, other work takes a
connection from the same pool every 0.1 s and gets one, because only the head of the line sits
in the database (on one connection, for one slice at a time) and the others sleep holding
none. All three are granted, one window apart, in the order they came. The same for the sync
client (threads, ConnectionPool) and the async one (tasks, AsyncConnectionPool), which is how
the bot runs. How long that other work waits for its connection is measured by `make bench`
(bench/client_waits.py), next to the same work with nobody waiting.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini
from llm_limits.tokens import GEMMA3_SDK_MODEL, TokenCounter

from .support import GEMMA, Conn, hold, set_gemma_limits, set_window

KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
CALLERS = ["first", "second", "third"]
# The three callers must line up before the held slot frees, or the test means nothing.
WINDOW_MS, GUARD_MS = 3000, 100


def fill_the_window(db: Conn, monkeypatch: pytest.MonkeyPatch) -> float:
    """The window held by a blocker; returns when its slot frees (time.monotonic())."""
    # A process's first call loads the local tokenizer, seconds on a loaded machine: loaded
    # first, so that the callers' counts take milliseconds and they line up in time.
    TokenCounter().local(GEMMA3_SDK_MODEL, "warm-up", None)
    set_window(db, WINDOW_MS, GUARD_MS)
    set_gemma_limits(db, rpm=1, tpm=15000)
    hold(monkeypatch, "b1")
    row = db.execute(
        "select granted from public.acquire(model => %s, tokens => 10, "
        "key_aliases => array['b1'], caller => 'blocker')",
        (GEMMA,),
    ).fetchone()
    assert row == (True,)
    return time.monotonic() + (WINDOW_MS + GUARD_MS) / 1000


def in_line(db: Conn, count: int, frees_at: float) -> bool:
    """Whether `count` callers hold a place in line; an error once the held slot has freed."""
    assert time.monotonic() < frees_at, f"{count} callers did not line up before the slot freed"
    row = db.execute("select count(*) from google_ai_internal.wait_tickets").fetchone()
    return row is not None and row[0] >= count


def served_in_order(db: Conn) -> None:
    rows = db.execute(
        "select caller, status from public.google_ai_reservations order by granted_at"
    ).fetchall()
    assert rows == [("blocker", "reserved")] + [(c, "committed") for c in CALLERS]


def test_sync_waiters_leave_the_pool_free(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    frees_at = fill_the_window(keyed_db, monkeypatch)
    with (
        ConnectionPool(db_url, kwargs=KWARGS, min_size=2, max_size=2) as pool,
        Client(pool=pool, base_url=fake.base_url, timeout=10.0) as client,
    ):
        assert client.held_keys() == ["b1"]
        errors: list[BaseException] = []

        def wait(caller: str) -> None:
            try:
                client.generate(GEMMA, f"{caller}: Привет", max_wait=30, caller=caller)
            except BaseException as exc:
                errors.append(exc)

        callers = []
        for caller in CALLERS:
            callers.append(threading.Thread(target=wait, args=(caller,)))
            callers[-1].start()
            while not in_line(keyed_db, len(callers), frees_at):  # arrival order
                time.sleep(0.01)
        probes = 0
        for _ in range(15):
            with pool.connection(timeout=5) as conn:
                probes += conn.execute("select 1").fetchone() == (1,)
            time.sleep(0.1)
        for t in callers:
            t.join(timeout=45)
    assert errors == []
    assert probes == 15
    served_in_order(keyed_db)


async def test_async_waiters_leave_the_pool_free(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    frees_at = fill_the_window(keyed_db, monkeypatch)
    async with AsyncConnectionPool(db_url, kwargs=KWARGS, min_size=2, max_size=2) as pool:
        client = Client(async_pool=pool, base_url=fake.base_url, timeout=10.0)
        tasks = []
        for caller in CALLERS:
            tasks.append(
                asyncio.ensure_future(
                    client.agenerate(GEMMA, f"{caller}: Привет", max_wait=30, caller=caller)
                )
            )
            while not in_line(keyed_db, len(tasks), frees_at):  # arrival order
                await asyncio.sleep(0.01)
        probes = 0
        for _ in range(15):
            async with pool.connection(timeout=5) as conn:
                probes += await (await conn.execute("select 1")).fetchone() == (1,)
            await asyncio.sleep(0.1)
        replies = await asyncio.gather(*tasks)
        await client.aclose()
    assert [r.text for r in replies] == [f"fake reply to: {c}: Привет" for c in CALLERS]
    assert probes == 15
    served_in_order(keyed_db)
