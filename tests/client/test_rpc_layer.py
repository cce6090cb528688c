"""The low-level API: one builder per RPC, run by ``Database`` blocking and on asyncio."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest

import llm_limits
from llm_limits import Database, Grant, Verdict
from llm_limits.db import acquire, pool_keys, settle, token_counter

from .support import GEMMA, KEYS, Conn, audit, reservations, set_gemma_limits, set_window


def test_acquire_then_settle(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    assert db.run(pool_keys()) == {alias: var for alias, (var, _, _) in KEYS.items()}
    counter = db.run(token_counter(GEMMA))
    assert counter.api_model == "gemma-3-27b-it"

    grant = db.run(acquire(GEMMA, 100, mode="NO_WAIT", max_wait_ms=0, caller="low-level"))
    assert isinstance(grant, Grant) and grant.granted and grant.reason is None
    assert isinstance(grant.reservation_id, uuid.UUID) and grant.ticket is None
    assert grant.model == "gemma-3-27b-it" and grant.key_alias in KEYS
    assert grant.env_var_name == KEYS[grant.key_alias][0]

    body = {"usageMetadata": {"promptTokenCount": 90, "candidatesTokenCount": 10}}
    assert db.run(settle(grant.reservation_id, 200, body)) == Verdict("commit", False, None)
    assert db.run(settle(grant.reservation_id, 200, body)) == Verdict(
        "commit", False, None
    )  # again
    db.close()
    [row] = reservations(keyed_db)
    assert (row["status"], row["actual_tokens"], row["completion_tokens"]) == ("committed", 90, 10)
    assert [d["caller"] for d in audit(keyed_db, "granted")] == ["low-level"]


def test_a_refusal_is_a_grant_row(keyed_db: Conn, db_url: str) -> None:
    set_gemma_limits(keyed_db, rpm=1)
    db = Database(db_url)
    first = db.run(acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"]))
    refused = db.run(acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"]))
    assert first.granted and not refused.granted
    assert refused.reason == "rpm" and refused.reservation_id is None
    assert refused.retry_after_ms is not None and refused.retry_after_ms > 0
    assert first.reservation_id is not None
    unsent = db.run(settle(first.reservation_id, None, None, "connect_failed"))
    assert (unsent.action, unsent.retry) == ("release_unsent", True)
    db.close()


def test_a_wait_is_queued_with_a_ticket_made_for_it(keyed_db: Conn, db_url: str) -> None:
    """A WAIT without a ticket gets one, and the one rule ends in a grant."""
    set_window(keyed_db, 1000, 0)
    set_gemma_limits(keyed_db, rpm=1)
    db = Database(db_url)
    assert db.run(acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"])).granted
    answer = db.run(acquire(GEMMA, 10, mode="WAIT", max_wait_ms=5000, key_aliases=["a1"]))
    first_ticket, calls = answer.ticket, 1
    assert answer.reason == "queued" and first_ticket is not None
    while answer.reason == "queued":
        time.sleep((answer.retry_after_ms or 0) / 1000)
        again = acquire(
            GEMMA, 10, mode="WAIT", max_wait_ms=5000, key_aliases=["a1"], ticket=answer.ticket
        )
        answer = db.run(again)
        calls += 1
        assert answer.ticket == first_ticket
    assert answer.granted and calls >= 2
    db.close()


async def test_the_same_on_asyncio(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    assert set(await db.arun(pool_keys())) == set(KEYS)
    assert (await db.arun(token_counter(GEMMA))).api_model == "gemma-3-27b-it"
    grant = await db.arun(acquire(GEMMA, 10, mode="WAIT", max_wait_ms=1000))
    assert grant.granted and grant.reservation_id is not None and grant.ticket is not None
    assert (await db.arun(settle(grant.reservation_id, 200, {}))).action == "commit"
    other = await db.arun(acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0))
    assert other.reservation_id is not None
    verdict = await db.arun(settle(other.reservation_id, 429, {"error": {"code": 429}}))
    assert (verdict.action, verdict.retry, verdict.retry_after_ms) == ("rate_limited", True, 0)
    with pytest.raises(llm_limits.RpcError) as info:
        await db.arun(acquire("no-such-model", 10, mode="NO_WAIT", max_wait_ms=0))
    assert info.value.sqlstate == "LL001"
    await db.aclose()
    statuses = sorted(r["status"] for r in reservations(keyed_db))
    assert statuses == ["committed", "rate_limited"]


async def test_a_settlement_once_started_is_finished_when_its_task_is_cancelled(
    keyed_db: Conn, db_url: str
) -> None:
    db = Database(db_url)
    grant = await db.arun(acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0))
    assert grant.reservation_id is not None
    task = asyncio.create_task(db.arun(settle(grant.reservation_id, 200, {})))
    await asyncio.sleep(0)  # started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await db.aclose()
    assert [r["status"] for r in reservations(keyed_db)] == ["committed"]


def test_every_statement_calls_its_rpc_with_named_cast_arguments() -> None:
    """The client runs only ``select ... from public.<rpc>(name => %(name)s::type, ...)``."""
    rid = uuid.uuid4()
    for rpc in (
        pool_keys(),
        token_counter(GEMMA),
        acquire(GEMMA, 1, mode="WAIT", max_wait_ms=0, ticket=rid),
        settle(rid, 200, {"candidates": []}, None),
    ):
        assert re.fullmatch(rf"select [\w, *]+ from public\.{rpc.name}\((.*)\)", rpc.sql), rpc.sql
        named = re.findall(r"(\w+) => %\((\w+)\)s::[\w\[\]]+", rpc.sql)
        assert [(name, name) for name in rpc.params] == named, rpc.name
