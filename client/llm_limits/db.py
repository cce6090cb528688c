"""Every SQL statement the client runs, and the connections it runs them on.

The client runs only ``select ... from public.fn(...)`` with named, explicitly cast arguments,
plus one read of the key pool. psycopg 3 in autocommit with ``prepare_threshold=None``: the
Supabase transaction pooler (Supavisor, port 6543) has no prepared statements.

A dropped connection (a restart, a pooler hiccup) discards every idle connection, since they
are most likely dead too, and the statement is retried on a fresh one:

* the settling RPCs are idempotent, so they are retried for a few seconds with backoff: a
  short outage must not lose a call's usage record;
* ``acquire`` is not retried here: its ``max_wait_ms`` belongs to the caller's deadline, so
  the client retries it once with the wait recomputed (a lost reply can only over-count);
* the key read is retried once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .errors import ConfigurationError, DatabaseError, DatabaseUnavailable, from_db_error

DB_URL_VARS = ("LLM_LIMITS_DB_URL", "SUPABASE_DB_URL", "DATABASE_URL")

SQL = {
    # The one query that is not an RPC: which env var holds each active key.
    "keys": "select key_alias, env_var_name from public.google_ai_api_keys where is_active",
    "token_counter": "select api_model, token_counter from public.token_counter(model => %s::text)",
    "acquire": "select * from public.acquire(model => %s::text, tokens => %s::int, "
    "mode => %s::text, max_wait_ms => %s::int, key_aliases => %s::text[], caller => %s::text, "
    "request_id => %s::text, ticket => %s::uuid)",
    "commit_usage": "select public.commit_usage(reservation_id => %s::uuid, "
    "prompt_tokens => %s::int, completion_tokens => %s::int, meta => %s::jsonb)",
    "release": "select public.release(reservation_id => %s::uuid, reason => %s::text, "
    "sent => %s::boolean)",
    "report_rate_limit": "select public.report_rate_limit(reservation_id => %s::uuid, "
    "quota_id => %s::text, retry_delay_ms => %s::int)",
    "disable_key": "select public.disable_key(key_alias => %s::text, reason => %s::text)",
}

Rows = list[tuple[Any, ...]]

# Pauses before each retry after a lost connection, per statement (see the module docstring).
_SETTLE_BACKOFF = (0.0, 0.25, 0.5, 1.0, 2.0)
RETRY_PAUSES: dict[str, tuple[float, ...]] = {
    "keys": (0.0,),
    "token_counter": (0.0,),
    "acquire": (),
    "commit_usage": _SETTLE_BACKOFF,
    "release": _SETTLE_BACKOFF,
    "report_rate_limit": _SETTLE_BACKOFF,
    "disable_key": _SETTLE_BACKOFF,
}


def dsn_from_env() -> str:
    """The first of LLM_LIMITS_DB_URL, SUPABASE_DB_URL, DATABASE_URL that is set."""
    for name in DB_URL_VARS:
        if os.environ.get(name):
            return os.environ[name]
    raise ConfigurationError(f"no database URL: set one of {', '.join(DB_URL_VARS)}")


def _is_connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    )


def _error_for(exc: psycopg.Error, final: bool) -> Exception | None:
    """The exception to raise for a database error, or None to reconnect and try once more."""
    ours = from_db_error(exc)
    if ours is not None:
        return ours
    if _is_connection_lost(exc):
        return DatabaseUnavailable(f"quota database unavailable: {exc}") if final else None
    return DatabaseError(f"quota database error {exc.sqlstate}: {exc}")


def _reusable(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE


class Database:
    """Runs the statements of ``SQL`` on own connections (a small free list) or a pool."""

    def __init__(
        self, dsn: str | None, pool: Any = None, async_pool: Any = None, connect_timeout: int = 10
    ) -> None:
        if dsn is None and pool is None and async_pool is None:
            raise ConfigurationError("pass dsn=, pool= or async_pool=, or use Client.from_env()")
        self._dsn, self._pool, self._async_pool = dsn or "", pool, async_pool
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": None,
            "connect_timeout": max(2, connect_timeout),
        }
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._aidle: list[psycopg.AsyncConnection[Any]] = []

    def describe(self) -> str:
        """host:port/dbname, without user or password."""
        if not self._dsn:
            return "pool"
        try:
            info = psycopg.conninfo.conninfo_to_dict(self._dsn)
        except psycopg.Error:
            return "?"
        return f"{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"

    def query(self, name: str, params: tuple[Any, ...]) -> Rows:
        pauses = RETRY_PAUSES[name]
        for attempt in range(len(pauses) + 1):
            try:
                with self._connection() as conn:
                    return conn.execute(SQL[name], params).fetchall()
            except psycopg.Error as exc:
                if _is_connection_lost(exc):
                    self._discard_idle()  # they are most likely dead too
                error = _error_for(exc, final=attempt == len(pauses))
                if error is not None:
                    raise error from exc
            time.sleep(pauses[attempt])
        raise AssertionError("unreachable")

    async def aquery(self, name: str, params: tuple[Any, ...]) -> Rows:
        pauses = RETRY_PAUSES[name]
        for attempt in range(len(pauses) + 1):
            try:
                async with self._aconnection() as conn:
                    cursor = await conn.execute(SQL[name], params)
                    return await cursor.fetchall()
            except psycopg.Error as exc:
                if _is_connection_lost(exc):
                    await self._adiscard_idle()
                error = _error_for(exc, final=attempt == len(pauses))
                if error is not None:
                    raise error from exc
            await asyncio.sleep(pauses[attempt])
        raise AssertionError("unreachable")

    def _discard_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _adiscard_idle(self) -> None:
        idle, self._aidle = self._aidle, []
        for conn in idle:
            await conn.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is not None:
            with self._pool.connection() as pooled:
                if not pooled.autocommit:
                    pooled.autocommit = True
                yield pooled
            return
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = psycopg.connect(self._dsn, **self._connect_kwargs)
        try:
            yield conn
        finally:
            if _reusable(conn):
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()

    @asynccontextmanager
    async def _aconnection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._async_pool is not None:
            async with self._async_pool.connection() as pooled:
                if not pooled.autocommit:
                    await pooled.set_autocommit(True)
                yield pooled
            return
        conn = self._aidle.pop() if self._aidle else None
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(self._dsn, **self._connect_kwargs)
        try:
            yield conn
        finally:
            if _reusable(conn):
                self._aidle.append(conn)
            else:
                await conn.close()

    def close(self) -> None:
        self._discard_idle()

    async def aclose(self) -> None:
        await self._adiscard_idle()
        self.close()
