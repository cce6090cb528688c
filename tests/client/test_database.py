"""The database side of the client: fail closed, reconnect once, pools, our SQLSTATEs."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini

from .support import GEMMA, Conn, reservations

NOWHERE = "postgresql://postgres@127.0.0.1:1/nothing"
MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def kill_client_connections(db: Conn) -> int:
    rows = db.execute(
        "select pg_terminate_backend(pid) from pg_stat_activity "
        "where datname = current_database() and pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


def test_unreachable_database_fails_closed(fake: FakeGemini) -> None:
    with (
        Client(NOWHERE, base_url=fake.base_url, connect_timeout=2) as client,
        pytest.raises(llm_limits.DatabaseUnavailable),
    ):
        client.generate(GEMMA, "hello")
    assert fake.stats().requests == 0


async def test_unreachable_database_fails_closed_async(fake: FakeGemini) -> None:
    client = Client(NOWHERE, base_url=fake.base_url, connect_timeout=2)
    with pytest.raises(llm_limits.DatabaseUnavailable):
        await client.agenerate(GEMMA, "hello")
    await client.aclose()
    assert fake.stats().requests == 0


def test_a_dropped_connection_is_reconnected_once(client: Client, keyed_db: Conn) -> None:
    client.generate(GEMMA, "one")
    assert kill_client_connections(keyed_db) >= 1

    assert client.generate(GEMMA, "two").text

    assert [r["status"] for r in reservations(keyed_db)] == ["committed", "committed"]


async def test_a_dropped_async_connection_is_reconnected_once(
    keyed_db: Conn, db_url: str, fake: FakeGemini
) -> None:
    client = Client(db_url, base_url=fake.base_url)
    await client.agenerate(GEMMA, "one")
    assert kill_client_connections(keyed_db) >= 1

    assert (await client.agenerate(GEMMA, "two")).text
    await client.aclose()


def test_a_psycopg_pool(keyed_db: Conn, db_url: str, fake: FakeGemini) -> None:
    kwargs = {"autocommit": True, "prepare_threshold": None}
    with (
        ConnectionPool(db_url, kwargs=kwargs, min_size=1, max_size=2) as pool,
        Client(pool=pool, base_url=fake.base_url) as client,
    ):
        assert client.generate(GEMMA, "hello").text
        assert "pool" in repr(client)
    assert [r["status"] for r in reservations(keyed_db)] == ["committed"]


async def test_an_async_psycopg_pool(keyed_db: Conn, db_url: str, fake: FakeGemini) -> None:
    kwargs = {"autocommit": True, "prepare_threshold": None}
    async with AsyncConnectionPool(db_url, kwargs=kwargs, min_size=1, max_size=2) as pool:
        client = Client(async_pool=pool, base_url=fake.base_url)
        assert (await client.agenerate(GEMMA, "hello")).text
        await client.aclose()
    assert [r["status"] for r in reservations(keyed_db)] == ["committed"]


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("select public.settle(gen_random_uuid(), 200)", "LL006"),
        ("select public.disable_key('nope')", "LL009"),
        ("delete from public.google_ai_audit_log", "LL010"),
    ],
)
def test_our_sqlstates_become_rpc_errors(keyed_db: Conn, sql: str, sqlstate: str) -> None:
    """No table of codes in Python: any LL code becomes an RpcError carrying it."""
    with pytest.raises(psycopg.Error) as info:
        keyed_db.execute(sql)
    mapped = llm_limits.errors.from_db_error(info.value)
    assert isinstance(mapped, llm_limits.RpcError)
    assert mapped.sqlstate == info.value.sqlstate == sqlstate and sqlstate in str(mapped)
    assert mapped.hint
