"""agenerate: the same plan on asyncio, and cancellation between acquire and commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from google.genai import errors

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini

from .support import GEMMA, Conn, audit, reservations


@pytest.fixture
async def aclient(keyed_db: Conn, db_url: str, fake: FakeGemini) -> AsyncIterator[Client]:
    client = Client(db_url, base_url=fake.base_url, timeout=10.0)
    yield client
    await client.aclose()


async def test_agenerate_commits(aclient: Client, keyed_db: Conn) -> None:
    resp = await aclient.agenerate(GEMMA, "hello", caller="bot")

    assert resp.text == "fake reply to: hello"
    assert [r["status"] for r in reservations(keyed_db)] == ["committed"]


async def test_agenerate_concurrent_calls(aclient: Client, keyed_db: Conn) -> None:
    replies = await asyncio.gather(*(aclient.agenerate(GEMMA, f"q{i}") for i in range(8)))

    assert sorted(r.text or "" for r in replies) == sorted(f"fake reply to: q{i}" for i in range(8))
    assert [r["status"] for r in reservations(keyed_db)] == ["committed"] * 8


async def test_agenerate_retries_like_generate(
    aclient: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    fake.inject(503, count=3)

    with pytest.raises(errors.ServerError):
        await aclient.agenerate(GEMMA, "hello")

    assert fake.stats().requests == 3
    assert {r["status"] for r in reservations(keyed_db)} == {"released"}


async def test_agenerate_no_wait_refusal(aclient: Client, keyed_db: Conn) -> None:
    keyed_db.execute("update public.google_ai_model_limits set rpm = 1 where model = %s", (GEMMA,))
    await aclient.agenerate(GEMMA, "one")
    await aclient.agenerate(GEMMA, "two")

    with pytest.raises(llm_limits.RateLimited) as info:
        await aclient.agenerate(GEMMA, "three", mode="NO_WAIT")
    assert info.value.reason == "rpm"


async def test_cancelling_a_slow_call_releases_the_reservation(
    aclient: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    fake.hang(5.0)
    task = asyncio.create_task(aclient.agenerate(GEMMA, "slow"))
    deadline = time.monotonic() + 5.0
    while fake.stats().requests == 0:  # the request reached the server: it is in flight
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [res] = reservations(keyed_db)
    assert res["status"] == "released"
    assert res["counted_requests"] == 1  # it reached Google, so it stays counted
    [released] = audit(keyed_db, "released")
    assert released["sent"] is True and released["reason"] == "cancelled"


async def test_a_timeout_around_agenerate_also_releases(
    aclient: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    fake.hang(5.0)

    # Long enough to be granted first on a busy box (keys, token count, acquire; `make test`
    # runs this lane under nice), well short of the hang.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(aclient.agenerate(GEMMA, "slow"), 3.0)

    assert [r["status"] for r in reservations(keyed_db)] == ["released"]


async def test_cancelling_a_waiting_acquire_leaves_no_reservation(
    aclient: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    keyed_db.execute("update public.google_ai_model_limits set rpm = 1 where model = %s", (GEMMA,))
    await aclient.agenerate(GEMMA, "one")
    await aclient.agenerate(GEMMA, "two")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(aclient.agenerate(GEMMA, "three", max_wait=30.0), 0.5)

    assert len(reservations(keyed_db)) == 2
    assert fake.stats().requests == 2
    # The connection the cancelled acquire ran on is still usable: a refusal is an answer.
    with pytest.raises(llm_limits.RateLimited):
        await aclient.agenerate(GEMMA, "four", mode="NO_WAIT")
