"""The database side of the client: fail closed, reconnect once, pools, the SQLSTATE table."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import llm_limits
from llm_limits import Client
from llm_limits.testing.fake_gemini import FakeGemini

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


def test_every_sqlstate_of_the_contract_has_one_class() -> None:
    header = (MIGRATIONS / "20261124000400_create_quota_rpcs.sql").read_text().split("\n\n")[0]
    documented = set(re.findall(r"\bLL0\d\d\b", header))
    assert documented == set(llm_limits.SQLSTATE_ERRORS)
    classes = list(llm_limits.SQLSTATE_ERRORS.values())
    assert len(set(classes)) == len(classes)
    assert all(issubclass(c, llm_limits.LimitsError) for c in classes)
    assert llm_limits.SQLSTATE_ERRORS["LL003"] is llm_limits.PromptTooLarge


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("select public.commit_usage(gen_random_uuid(), 1)", llm_limits.UnknownReservation),
        ("select public.disable_key('nope')", llm_limits.UnknownKey),
        ("delete from public.google_ai_audit_log", llm_limits.AuditAppendOnly),
    ],
)
def test_database_errors_map_through_the_table(
    keyed_db: Conn, sql: str, error: type[llm_limits.RpcError]
) -> None:
    with pytest.raises(psycopg.Error) as info:
        keyed_db.execute(sql)
    mapped = llm_limits.errors.from_db_error(info.value)
    assert isinstance(mapped, error)
    assert mapped.sqlstate == info.value.sqlstate and mapped.sqlstate in str(mapped)
