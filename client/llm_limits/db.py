"""Every SQL statement the client runs, and the connections it runs them on.

One builder per RPC (``pool_keys``, ``token_counter``, ``acquire``, ``settle``) describes a call
as an ``Rpc``: a ``select ... from public.fn(...)`` with named, explicitly cast arguments, and
how its rows become a typed result. ``Database.run`` runs it blocking and ``Database.arun`` on
asyncio, so each RPC is written once. psycopg 3 in autocommit with ``prepare_threshold=None``:
the Supabase transaction pooler (Supavisor, port 6543) has no prepared statements.

A lost connection (a restart, a pooler hiccup) closes every idle connection, since they are
most likely dead too, and the statement is retried on a fresh one as an ``Outage`` says (at
once, then with a jittered backoff): ``pool_keys`` and ``token_counter`` for ``RIDE_OUT_S``,
``settle`` for ``SETTLE_RIDE_OUT_S`` (it is idempotent, and an answer already served must keep
its usage record). ``acquire`` is not retried here: the client retries it with its ticket, which
keeps its place, until the call's deadline; a lost reply can only over-count.

Without a user's pool, connections are kept in a plain free list, not a psycopg_pool pool: a
pool reports an unreachable database as a timeout (after ``timeout`` seconds, without the
reason), and an asyncio pool's workers belong to the event loop that opened it.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .errors import ConfigurationError, DatabaseError, DatabaseUnavailable, from_db_error

DB_URL_VARS = ("LLM_LIMITS_DB_URL", "SUPABASE_DB_URL", "DATABASE_URL")
# How long a lost database is retried before DatabaseUnavailable: a call with no wait budget (a
# NO_WAIT, the lookups before acquire) rides out RIDE_OUT_S, more than a fast restart's ~0.3 s
# down; a settle, the record of an answer already served, rides out SETTLE_RIDE_OUT_S.
RIDE_OUT_S, SETTLE_RIDE_OUT_S = 2.0, 10.0
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.05, 1.0
T = TypeVar("T")
Row = dict[str, Any]


@dataclass(frozen=True)
class Grant:
    """One ``public.acquire_result`` row: a grant, or a refusal with its reason."""

    granted: bool
    reservation_id: uuid.UUID | None
    key_alias: str | None
    env_var_name: str | None
    model: str  # the API model id to call
    waited_ms: int | None
    # rpm, tpm, rpd, cooldown, no_key, wait_timeout, caller_budget, end_user_limit, queued
    reason: str | None
    retry_after_ms: int | None
    ticket: uuid.UUID | None  # a WAIT's place in line: pass it back while queued
    queue_position: int | None = None  # while queued: 1 = next in line
    expected_wait_ms: int | None = None  # while queued: when its turn is expected


@dataclass(frozen=True)
class Verdict:
    """One ``public.settle`` row: what the answer meant and what to do next."""

    action: str  # commit, rate_limited, disable_key, release_sent, release_unsent
    retry: bool
    retry_after_ms: int | None


@dataclass(frozen=True)
class ModelCounter:
    """One ``public.token_counter`` row: the model's API id and the counter it pins, if any."""

    api_model: str
    token_counter: str | None


@dataclass(frozen=True)
class Rpc(Generic[T]):
    """One call of an RPC: its statement (``name`` for logs and tests), its parameters, how its
    rows become the result, how many seconds of lost connection it rides out, and whether a
    cancelled asyncio task may abandon it."""

    name: str
    sql: str
    params: dict[str, Any]
    result: Callable[[list[Row]], T]
    ride_out: float = RIDE_OUT_S
    interruptible: bool = True


class Outage:
    """A lost database, retried until ``until`` (``time.monotonic()``): the first retry at once
    (most losses are one dead connection), then pauses of 50 ms doubling to 1 s, each drawn from
    its upper half so that callers cut off together do not all come back together. Through a
    fast restart (~0.3 s) a caller is back well within a WAIT ticket's grace
    (``wait_ticket_grace_ms``, 1 s), so it keeps its place in line."""

    def __init__(self, until: float) -> None:
        self.until, self.retries = until, 0

    @classmethod
    def lasting(cls, seconds: float, deadline: float = 0.0) -> Outage:
        """From now: until ``deadline``, and for at least ``seconds``."""
        return cls(max(deadline, time.monotonic() + seconds))

    def next_pause(self) -> float | None:
        """The pause before the next try, or None when the time is up (the last try ends it)."""
        left = self.until - time.monotonic()
        if left <= 0:
            return None
        step = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self.retries - 1)) if self.retries else 0
        self.retries += 1
        return min(left, random.uniform(step / 2, step))


# Each builder's arguments are its statement's named parameters: ``locals()`` on entry.


def pool_keys() -> Rpc[dict[str, str]]:
    """The active keys: alias -> the env var (or Kaggle secret) that holds its value."""
    return Rpc(
        "pool_keys",
        "select key_alias, env_var_name from public.pool_keys()",
        {},
        lambda rows: {r["key_alias"]: r["env_var_name"] for r in rows},
    )


def token_counter(model: str) -> Rpc[ModelCounter]:
    return Rpc(
        "token_counter",
        "select api_model, token_counter from public.token_counter(model => %(model)s::text)",
        locals(),
        lambda rows: ModelCounter(**rows[0]),
    )


def acquire(
    model: str, tokens: int, *, mode: str, max_wait_ms: int, key_aliases: list[str] | None = None,
    caller: str | None = None, request_id: str | None = None, ticket: uuid.UUID | None = None,
    end_user: str | None = None,
) -> Rpc[Grant]:  # fmt: skip
    return Rpc(
        "acquire",
        "select * from public.acquire(model => %(model)s::text, tokens => %(tokens)s::int,"
        " mode => %(mode)s::text, max_wait_ms => %(max_wait_ms)s::int,"
        " key_aliases => %(key_aliases)s::text[], caller => %(caller)s::text,"
        " request_id => %(request_id)s::text, ticket => %(ticket)s::uuid,"
        " end_user => %(end_user)s::text)",
        locals(),
        lambda rows: Grant(**rows[0]),
        ride_out=0.0,  # the client retries it, keeping its ticket, until the call's deadline
    )


def settle(
    reservation_id: uuid.UUID, http_status: int | None, response: Any = None,
    transport_error: str | None = None,
) -> Rpc[Verdict]:  # fmt: skip
    """Once started, a settlement is finished even if its asyncio task is cancelled."""
    return Rpc(
        "settle",
        "select action, retry, retry_after_ms from public.settle("
        "reservation_id => %(reservation_id)s::uuid, http_status => %(http_status)s::int,"
        " response => %(response)s::jsonb, transport_error => %(transport_error)s::text)",
        {**locals(), "response": None if response is None else Jsonb(response)},
        lambda rows: Verdict(**rows[0]),
        ride_out=SETTLE_RIDE_OUT_S,
        interruptible=False,
    )


def url_from_env() -> str | None:
    """The first of LLM_LIMITS_DB_URL, SUPABASE_DB_URL, DATABASE_URL that is set, or None."""
    return next(filter(None, (os.environ.get(v, "").strip() for v in DB_URL_VARS)), None)


def dsn_from_env() -> str:
    url = url_from_env()
    if url is None:
        raise ConfigurationError(f"no database URL: set one of {', '.join(DB_URL_VARS)}")
    return url


def _is_connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return isinstance(exc, psycopg.OperationalError) and (
        state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    )


def _pause_or_raise(exc: psycopg.Error, outage: Outage) -> float:
    """After a failed attempt: the pause before the next one, or the exception to raise."""
    ours = from_db_error(exc)
    if ours is not None:
        raise ours from exc
    if not _is_connection_lost(exc):
        raise DatabaseError(f"quota database error {exc.sqlstate}: {exc}") from exc
    pause = outage.next_pause()
    if pause is None:
        raise DatabaseUnavailable(f"quota database unavailable: {exc}") from exc
    return pause


def _reusable(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    return not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE


async def uninterruptible(coro: Coroutine[Any, Any, T]) -> T:
    """Finish ``coro`` even if the caller is cancelled meanwhile, then re-raise that."""
    task = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller must see
        raise cancelled
    return task.result()


class Database:
    """Runs an ``Rpc`` (``db.run(acquire(...))``, ``await db.arun(...)``) on its own connections
    (a small free list) or on a psycopg_pool pool. The documented low-level API: see the README.
    """

    def __init__(
        self, dsn: str | None, pool: Any = None, async_pool: Any = None, connect_timeout: int = 10
    ) -> None:
        if dsn is None and pool is None and async_pool is None:
            raise ConfigurationError("pass dsn=, pool= or async_pool=, or use Client.from_env()")
        self._dsn, self._pool, self._async_pool = dsn or "", pool, async_pool
        self._connect_kwargs: dict[str, Any] = dict(
            autocommit=True, prepare_threshold=None, connect_timeout=max(2, connect_timeout)
        )
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

    def run(self, rpc: Rpc[T]) -> T:
        outage: Outage | None = None
        while True:
            try:
                with self._connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    return rpc.result(cur.execute(rpc.sql, rpc.params).fetchall())
            except psycopg.Error as exc:
                if _is_connection_lost(exc):
                    self.close()  # every idle connection is most likely dead too
                outage = outage or Outage.lasting(rpc.ride_out)
                time.sleep(_pause_or_raise(exc, outage))

    async def arun(self, rpc: Rpc[T]) -> T:
        """``run`` on asyncio. A cancelled task abandons an interruptible RPC (psycopg cancels the
        statement in the server too); any other is finished first."""
        return await (self._arun(rpc) if rpc.interruptible else uninterruptible(self._arun(rpc)))

    async def _arun(self, rpc: Rpc[T]) -> T:
        outage: Outage | None = None
        while True:
            try:
                async with self._aconnection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(rpc.sql, rpc.params)
                    return rpc.result(await cur.fetchall())
            except psycopg.Error as exc:
                if _is_connection_lost(exc):
                    await self.aclose()
                outage = outage or Outage.lasting(rpc.ride_out)
                await asyncio.sleep(_pause_or_raise(exc, outage))

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
        """Close the idle connections (a later call connects again)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def aclose(self) -> None:
        idle, self._aidle = self._aidle, []
        for conn in idle:
            await conn.close()
        self.close()
