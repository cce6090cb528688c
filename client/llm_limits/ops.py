"""A call's steps as data, so the attempt logic is written once and run blocking or async.

A plan is a generator that yields ``Query``, ``Send``, ``Sleep``, ``CountTokens`` and ``Call``
and receives each result (or has each exception thrown into it, so its own ``try`` blocks
settle a reservation). ``run`` performs the steps with blocking I/O, ``arun`` with asyncio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google import genai
from google.genai import types

from .db import Database

T = TypeVar("T")

# Each RPC method of Database and its twin on asyncio.
ASYNC_TWIN: dict[Callable[..., Any], Callable[..., Coroutine[Any, Any, Any]]] = {
    Database.pool_keys: Database.apool_keys,
    Database.token_counter: Database.atoken_counter,
    Database.acquire: Database.aacquire,
    Database.settle: Database.asettle,
}
# A cancelled acquire is cancelled in the server too; a settlement, once started, is finished.
INTERRUPTIBLE = frozenset({Database.pool_keys, Database.token_counter, Database.acquire})


@dataclass(frozen=True)
class Query:
    """An RPC: a method of ``Database`` (e.g. ``Database.acquire``) and its arguments."""

    rpc: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    google: genai.Client
    model: str
    contents: Any
    config: types.GenerateContentConfig | None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class CountTokens:
    google: genai.Client
    model: str
    contents: Any


@dataclass(frozen=True)
class Call:
    """Blocking local work (a tokenizer that may still be loading): off the event loop."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


Op = Query | Send | Sleep | CountTokens | Call
Plan = Generator[Op, Any, T]


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


def run(plan: Plan[T], db: Database) -> T:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = plan.throw(error) if error is not None else plan.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(op, Query):
                value = op.rpc(db, *op.args, **op.kwargs)
            elif isinstance(op, Send):
                value = op.google.models.generate_content(
                    model=op.model, contents=op.contents, config=op.config
                )
            elif isinstance(op, CountTokens):
                value = op.google.models.count_tokens(model=op.model, contents=op.contents)
            elif isinstance(op, Call):
                value = op.fn(*op.args)
            else:
                time.sleep(op.seconds)
        except BaseException as exc:  # KeyboardInterrupt too: the plan settles, then re-raises
            error = exc


async def arun(plan: Plan[T], db: Database) -> T:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = plan.throw(error) if error is not None else plan.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(op, Query):
                query = ASYNC_TWIN[op.rpc](db, *op.args, **op.kwargs)
                value = await (query if op.rpc in INTERRUPTIBLE else uninterruptible(query))
            elif isinstance(op, Send):
                value = await op.google.aio.models.generate_content(
                    model=op.model, contents=op.contents, config=op.config
                )
            elif isinstance(op, CountTokens):
                value = await op.google.aio.models.count_tokens(
                    model=op.model, contents=op.contents
                )
            elif isinstance(op, Call):
                value = await asyncio.to_thread(op.fn, *op.args)
            else:
                await asyncio.sleep(op.seconds)
        except BaseException as exc:  # CancelledError too
            error = exc
