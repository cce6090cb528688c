"""A call's steps as data, so the attempt logic is written once and run blocking or on asyncio.

A plan is a generator that yields steps (a ``db.Rpc``, ``Google``, ``Sleep``, ``Call``) and
receives each result, or has each exception thrown into it, so its own ``try`` blocks settle a
reservation. ``run`` performs the steps with blocking I/O, ``arun`` on asyncio; every step but
an ``Rpc`` (which ``Database`` runs) knows both ways itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from google import genai

from .db import Database, Rpc

T = TypeVar("T")


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


Step = Rpc[Any] | Google | Sleep | Call
Plan = Generator[Step, Any, T]


def run(plan: Plan[T], db: Database) -> T:
    try:
        step = next(plan)
        while True:
            try:
                value = db.run(step) if isinstance(step, Rpc) else step.run()
            except BaseException as exc:  # KeyboardInterrupt too: the plan settles, then re-raises
                step = plan.throw(exc)
            else:
                step = plan.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def arun(plan: Plan[T], db: Database) -> T:
    try:
        step = next(plan)
        while True:
            try:
                value = await (db.arun(step) if isinstance(step, Rpc) else step.arun())
            except BaseException as exc:  # CancelledError too
                step = plan.throw(exc)
            else:
                step = plan.send(value)
    except StopIteration as stop:
        result: T = stop.value
        return result
