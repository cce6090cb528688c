"""The low-level API: ``Database``, one typed method per RPC, blocking and on asyncio."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

import llm_limits
from llm_limits import Client, Database, Grant, ops
from llm_limits.db import Statement
from llm_limits.testing.fake_gemini import FakeGemini

from .support import GEMMA, KEYS, Conn, audit, reservations, set_gemma_limits, set_window


def test_acquire_then_commit_usage(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    pool = db.keys()
    assert pool.env_vars == {alias: var for alias, (var, _, _) in KEYS.items()}
    assert pool.max_wait_cap_ms == 90_000
    counter = db.token_counter(GEMMA)
    assert counter.api_model == "gemma-3-27b-it"

    grant = db.acquire(GEMMA, 100, mode="NO_WAIT", max_wait_ms=0, caller="low-level")
    assert isinstance(grant, Grant) and grant.granted and grant.reason is None
    assert isinstance(grant.reservation_id, uuid.UUID)
    assert grant.model == "gemma-3-27b-it" and grant.key_alias in KEYS
    assert grant.env_var_name == KEYS[grant.key_alias][0]

    assert db.commit_usage(grant.reservation_id, 90, 10, {"via": "http"}) is True
    assert db.commit_usage(grant.reservation_id, 90, 10, {"via": "http"}) is False  # settled
    db.close()
    assert [r["status"] for r in reservations(keyed_db)] == ["committed"]
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
    assert db.release(first.reservation_id, "not sent", False) is True
    db.close()


def test_settling_and_disabling(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    grant = db.acquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0, key_aliases=["a1"])
    assert grant.reservation_id is not None
    assert db.report_rate_limit(grant.reservation_id, "PerMinute", 2000) is not None
    assert db.disable_key("b1", "revoked") is True
    assert set(db.keys().env_vars) == {"a1", "a2"}
    with pytest.raises(llm_limits.UnknownKey):
        db.disable_key("nope", None)
    db.close()
    assert [r["status"] for r in reservations(keyed_db)] == ["rate_limited"]


async def test_the_same_on_asyncio(keyed_db: Conn, db_url: str) -> None:
    db = Database(db_url)
    assert set((await db.akeys()).env_vars) == set(KEYS)
    assert (await db.atoken_counter(GEMMA)).api_model == "gemma-3-27b-it"
    grant = await db.aacquire(GEMMA, 10, mode="WAIT", max_wait_ms=1000, ticket=uuid.uuid4())
    assert grant.granted and grant.reservation_id is not None
    assert await db.acommit_usage(grant.reservation_id, 8, 2, {}) is True
    other = await db.aacquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0)
    assert other.reservation_id is not None
    assert await db.arelease(other.reservation_id, "changed my mind", False) is True
    third = await db.aacquire(GEMMA, 10, mode="NO_WAIT", max_wait_ms=0)
    assert third.reservation_id is not None
    assert await db.areport_rate_limit(third.reservation_id, None, None) is not None
    assert await db.adisable_key("a2", None) is True
    with pytest.raises(llm_limits.UnknownModel):
        await db.aacquire("no-such-model", 10, mode="NO_WAIT", max_wait_ms=0)
    await db.aclose()
    statuses = sorted(r["status"] for r in reservations(keyed_db))
    assert statuses == ["committed", "rate_limited", "released"]


def test_a_lowered_wait_cap_is_read_with_the_keys(keyed_db: Conn, db_url: str) -> None:
    keyed_db.execute("update public.google_ai_settings set max_wait_cap_ms = 250")
    db = Database(db_url)
    assert db.keys().max_wait_cap_ms == 250
    with pytest.raises(llm_limits.InvalidWait):
        db.acquire(GEMMA, 10, mode="WAIT", max_wait_ms=251)
    keyed_db.execute("update public.google_ai_api_keys set is_active = false")
    assert db.keys() == llm_limits.KeyPool({}, 250)
    db.close()


def test_a_wait_cap_of_zero_sleeps_in_the_client(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_window(keyed_db, 1000, 0)
    set_gemma_limits(keyed_db, rpm=1)
    keyed_db.execute("update public.google_ai_settings set max_wait_cap_ms = 0")
    sent: list[str] = []
    fetch = Database._fetch

    def counted(db: Database, stmt: Statement, params: dict[str, Any]) -> Any:
        sent.append(stmt.name)
        return fetch(db, stmt, params)

    monkeypatch.setattr(Database, "_fetch", counted)
    with Client(db_url, base_url=fake.base_url) as client:
        client.generate(GEMMA, "one")  # two quota groups: each takes its one request
        client.generate(GEMMA, "two")
        assert client.generate(GEMMA, "three", mode="WAIT", max_wait=5.0).text
    rows = keyed_db.execute(
        "select granted_at from public.google_ai_reservations order by granted_at"
    ).fetchall()
    first, _, third = [row[0] for row in rows]
    assert third >= first + timedelta(seconds=1)  # it waited for the window to free
    assert sent.count("acquire") <= 5, sent  # slept in between, did not spin


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
