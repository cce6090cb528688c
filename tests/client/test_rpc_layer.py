"""The low-level API: ``Database``, one typed method per RPC, blocking and on asyncio."""

from __future__ import annotations

import time
import uuid

import pytest

import llm_limits
from llm_limits import Database, Grant, Verdict, ops

from .support import GEMMA, KEYS, Conn, audit, reservations, set_gemma_limits, set_window


def test_acquire_then_settle(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    assert db.pool_keys() == {alias: var for alias, (var, _, _) in KEYS.items()}
    counter = db.token_counter(GEMMA)
    assert counter.api_model == "gemma-3-27b-it"

    grant = db.acquire(GEMMA, 100, mode="NO_WAIT", max_wait_ms=0, caller="low-level")
    assert isinstance(grant, Grant) and grant.granted and grant.reason is None
    assert isinstance(grant.reservation_id, uuid.UUID) and grant.ticket is None
    assert grant.model == "gemma-3-27b-it" and grant.key_alias in KEYS
    assert grant.env_var_name == KEYS[grant.key_alias][0]

    body = {"usageMetadata": {"promptTokenCount": 90, "candidatesTokenCount": 10}}
    assert db.settle(grant.reservation_id, 200, body) == Verdict("commit", False, None)
    assert db.settle(grant.reservation_id, 200, body) == Verdict("commit", False, None)  # again
    db.close()
    [row] = reservations(keyed_db)
    assert (row["status"], row["actual_tokens"], row["completion_tokens"]) == ("committed", 90, 10)
    assert [d["caller"] for d in audit(keyed_db, "granted")] == ["low-level"]


def test_a_refusal_is_a_grant_row(keyed_db: Conn, db_url: str) -> None:
    set_gemma_limits(keyed_db, rpm=1)
    db = Database(db_url)
    first = db.acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"])
    refused = db.acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"])
    assert first.granted and not refused.granted
    assert refused.reason == "rpm" and refused.reservation_id is None
    assert refused.retry_after_ms is not None and refused.retry_after_ms > 0
    assert first.reservation_id is not None
    unsent = db.settle(first.reservation_id, None, None, "connect_failed")
    assert (unsent.action, unsent.retry) == ("release_unsent", True)
    db.close()


def test_a_wait_is_queued_with_a_ticket_made_for_it(keyed_db: Conn, db_url: str) -> None:
    """A WAIT without a ticket gets one, and the one rule ends in a grant."""
    set_window(keyed_db, 1000, 0)
    set_gemma_limits(keyed_db, rpm=1)
    db = Database(db_url)
    assert db.acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"]).granted
    answer = db.acquire(GEMMA, 10, mode="WAIT", max_wait_ms=5000, key_aliases=["a1"])
    first_ticket, calls = answer.ticket, 1
    assert answer.reason == "queued" and first_ticket is not None
    while answer.reason == "queued":
        time.sleep((answer.retry_after_ms or 0) / 1000)
        answer = db.acquire(
            GEMMA, 10, mode="WAIT", max_wait_ms=5000, key_aliases=["a1"], ticket=answer.ticket
        )
        calls += 1
        assert answer.ticket == first_ticket
    assert answer.granted and calls >= 2
    db.close()


async def test_the_same_on_asyncio(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    assert set(await db.apool_keys()) == set(KEYS)
    assert (await db.atoken_counter(GEMMA)).api_model == "gemma-3-27b-it"
    grant = await db.aacquire(GEMMA, 10, mode="WAIT", max_wait_ms=1000)
    assert grant.granted and grant.reservation_id is not None and grant.ticket is not None
    assert (await db.asettle(grant.reservation_id, 200, {})).action == "commit"
    other = await db.aacquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0)
    assert other.reservation_id is not None
    verdict = await db.asettle(other.reservation_id, 429, {"error": {"code": 429}})
    assert (verdict.action, verdict.retry, verdict.retry_after_ms) == ("rate_limited", True, 0)
    with pytest.raises(llm_limits.RpcError) as info:
        await db.aacquire("no-such-model", 10, mode="NO_WAIT", max_wait_ms=0)
    assert info.value.sqlstate == "LL001"
    await db.aclose()
    statuses = sorted(r["status"] for r in reservations(keyed_db))
    assert statuses == ["committed", "rate_limited"]


def test_every_rpc_method_has_an_async_twin_for_the_plans() -> None:
    public = {
        name
        for name, member in vars(Database).items()
        if callable(member) and not name.startswith("_") and name not in ("describe", "close")
    }
    blocking = {name for name in public if f"a{name}" in public}
    assert {f.__name__ for f in ops.ASYNC_TWIN} == blocking
    assert public == blocking | {f"a{name}" for name in blocking} | {"aclose"}
    assert all(twin.__name__ == f"a{rpc.__name__}" for rpc, twin in ops.ASYNC_TWIN.items())
