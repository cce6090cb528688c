"""A call's steps as data, so the attempt logic is written once and run blocking or on asyncio.

A plan is a generator that yields steps (a ``db.Rpc``, ``Google``, ``Sleep``, ``Call``) and
receives each result, or has each exception thrown into it, so its own ``try`` blocks settle a
reservation. ``run`` performs the steps with blocking I/O, ``arun`` on asyncio; every step but
an ``Rpc`` (which ``Database`` runs) knows both ways itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google import genai

from .db import Database, Rpc

T = TypeVar("T")
log = logging.getLogger("llm_limits")


@dataclass(frozen=True)
class Google:
    """A call of the SDK's ``models.<method>`` (``generate_content``, ``count_tokens``)."""

    client: genai.Client
    method: str
    kwargs: dict[str, Any]

    def run(self) -> Any:
        return getattr(self.client.models, self.method)(**self.kwargs)

    async def arun(self) -> Any:
        return await getattr(self.client.aio.models, self.method)(**self.kwargs)


@dataclass(frozen=True)
class Sleep:
    seconds: float

    def run(self) -> None:
        time.sleep(self.seconds)

    async def arun(self) -> None:
        await asyncio.sleep(self.seconds)


@dataclass(frozen=True)
class Call:
    """Blocking local work (a tokenizer that may still be loading): off the event loop."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def run(self) -> Any:
        return self.fn(*self.args)

    async def arun(self) -> Any:
        return await asyncio.to_thread(self.fn, *self.args)


@dataclass(frozen=True)
class Notify:
    """A user's hook (``on_wait``), called with ``arg``. Its exceptions are logged, never
    raised: a progress message must not fail the call. On asyncio a coroutine it returns is
    awaited; a blocking run cannot await one, so it is closed with a warning."""

    hook: Callable[[Any], object]
    arg: Any

    def run(self) -> None:
        try:
            result = self.hook(self.arg)
        except Exception:
            log.exception("%s hook failed", getattr(self.hook, "__name__", "on_wait"))
            return
        if inspect.iscoroutine(result):
            result.close()
            log.warning("an async hook needs agenerate(); generate() cannot await it")

    async def arun(self) -> None:
        try:
            result = self.hook(self.arg)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s hook failed", getattr(self.hook, "__name__", "on_wait"))


class Runnable(Protocol):
    """A step of another plan (the batch's call of its target): it knows both ways itself."""

    def run(self) -> Any: ...

    async def arun(self) -> Any: ...


Step = Rpc[Any] | Google | Sleep | Call | Notify | Runnable
Plan = Generator[Step, Any, T]


def run(plan: Plan[T], db: Database | None = None) -> T:
    """Perform a plan's steps with blocking I/O (``db`` runs its ``Rpc`` steps, if it has any)."""
    try:
        step = next(plan)
        while True:
            try:
                value = _database(db).run(step) if isinstance(step, Rpc) else step.run()
            except BaseException as exc:  # KeyboardInterrupt too: the plan settles, then re-raises
                step = plan.throw(exc)
            else:
                step = plan.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def arun(plan: Plan[T], db: Database | None = None) -> T:
    """Perform a plan's steps on asyncio."""
    try:
        step = next(plan)
        while True:
            try:
                value = await (_database(db).arun(step) if isinstance(step, Rpc) else step.arun())
            except BaseException as exc:  # CancelledError too
                step = plan.throw(exc)
            else:
                step = plan.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _database(db: Database | None) -> Database:
    if db is None:
        raise TypeError("this plan runs RPCs: pass the Database to run it on")
    return db
