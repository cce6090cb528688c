"""A WAIT that falls back in time tries the later models of its chain, then waits in line
on the model it asked for, in the same call. A refused try must let its window go before
that wait: otherwise every caller of the fallback model queues behind a sleeper for up to a
slice, and a waiter that holds its own ticket while it locks that window deadlocks with the
sleeper, which waits for that ticket (40P01 raised to the bot in the aging policy run).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg

from tests.support import Conn, add_key, add_model, sqlstate_of

BOT_TICKET = uuid.UUID(int=0xFA11)


def call(conn: Conn, model: str, mode: str, caller: str, ticket: uuid.UUID | None = None) -> Any:
    cur = conn.execute(
        "select granted, reason, retry_after_ms, ticket from public.acquire(model => %s,"
        " tokens => 1, mode => %s, max_wait_ms => %s, key_aliases => null, caller => %s,"
        " ticket => %s)",
        (model, mode, 30000 if mode == "WAIT" else 0, caller, ticket),
    )
    return cur.fetchone()


def test_a_fallback_try_lets_its_window_go_before_the_wait(db: Conn, db_url: str) -> None:
    db.execute(
        "update public.google_ai_caller_classes set fallback_after_ms = 100"
        " where name = 'interactive'"
    )
    db.execute("update public.google_ai_settings set wait_slice_ms = 2000")
    add_model(db, "fb-big", 1, None, 100)
    add_model(db, "fb-small", 1, None, 100)
    db.execute(
        "insert into public.google_ai_fallbacks (model, fallback_model)"
        " values ('fb-big', 'fb-small')"
    )
    add_key(db, "fb-key", "fb-proj")
    db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class) values"
        " ('bot', 'interactive'), ('notebook', 'batch')"
    )
    # Both minutes spent: the bot's fallback try on fb-small is refused, and it waits on fb-big.
    assert call(db, "fb-big", "NO_WAIT", "notebook")[0] is True
    assert call(db, "fb-small", "NO_WAIT", "notebook")[0] is True
    assert call(db, "fb-big", "WAIT", "bot", BOT_TICKET)[1] == "queued"
    time.sleep(0.2)  # past fallback_after_ms: the next call falls back in time first

    bot: dict[str, Any] = {}

    def bot_call() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            bot["answer"] = call(conn, "fb-big", "WAIT", "bot", BOT_TICKET)
            bot["ended"] = time.monotonic()

    sleeper = threading.Thread(target=bot_call)
    sleeper.start()
    time.sleep(0.3)  # the bot is now in its wait on fb-big, for up to its 2 s slice
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("set lock_timeout = '1s'")
        answer: list[Any] = []
        state = sqlstate_of(lambda: answer.append(call(other, "fb-small", "NO_WAIT", "notebook")))
        other_ended = time.monotonic()
    sleeper.join()

    assert state is None, f"the fallback model's window stayed locked by the sleeping bot ({state})"
    assert answer[0][:2] == (False, "rpm")
    assert bot["answer"][1] == "queued" and bot["ended"] > other_ended, (
        "the bot's call ended before the other caller's: it was not waiting meanwhile"
    )
