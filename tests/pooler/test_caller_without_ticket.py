"""A caller that knows nothing about tickets (psql, PostgREST, another SDK), through the
transaction pooler: its first WAIT call gets a ticket made for it, and the one rule (while the
answer is 'queued', sleep retry_after_ms and call again with the ticket) ends in a grant, or
in wait_timeout at the deadline its first call fixed. It lines up behind the ticket holders
already waiting, and only its final answer is audited.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg

from tests.client.support import GEMMA, Conn, audit, set_gemma_limits, set_window
from tests.conftest import pooled

WINDOW_MS, GUARD_MS = 1000, 0


def call(db: Conn, max_wait_ms: int, caller: str, ticket: uuid.UUID | None) -> dict[str, Any]:
    cur = db.execute(
        "select * from public.acquire(model => %s, tokens => 10, mode => 'WAIT', "
        "max_wait_ms => %s, key_aliases => array['b1'], caller => %s, ticket => %s)",
        (GEMMA, max_wait_ms, caller, ticket),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip([c.name for c in cur.description or []], row, strict=True))


def wait_as_told(url: str, max_wait_ms: int, caller: str) -> tuple[dict[str, Any], int]:
    """The one rule, on a connection per call as a pooled client has it; (answer, calls)."""
    ticket, calls = None, 0
    while True:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as db:
            answer = call(db, max_wait_ms, caller, ticket)
        calls += 1
        if answer["reason"] != "queued":
            return answer, calls
        assert answer["ticket"] is not None and (ticket is None or answer["ticket"] == ticket)
        ticket = answer["ticket"]
        time.sleep(answer["retry_after_ms"] / 1000)


def fill(db: Conn) -> None:
    """Key b1's only slot of the 1 s window taken."""
    set_window(db, WINDOW_MS, GUARD_MS)
    set_gemma_limits(db, rpm=1, tpm=15000)
    assert call(db, 0, "filler", None)["granted"]


def test_the_first_call_makes_a_ticket_and_the_rule_ends_in_a_grant(
    keyed_db: Conn, db_url: str
) -> None:
    fill(keyed_db)
    first = call(keyed_db, 5000, "psql", None)
    assert (first["granted"], first["reason"]) == (False, "queued")
    assert first["ticket"] is not None and first["retry_after_ms"] >= 0

    answer, calls = wait_as_told(pooled(db_url), 5000, "psql-2")
    assert answer["granted"] is True and calls >= 2
    granted = [d for d in audit(keyed_db, "granted") if d.get("caller") == "psql-2"]
    refused = [d for d in audit(keyed_db, "refused") if d.get("caller") == "psql-2"]
    assert len(granted) == 1 and refused == []  # 'queued' answers are not audited


def test_the_deadline_is_the_first_calls(keyed_db: Conn, db_url: str) -> None:
    set_window(keyed_db, 60_000, 0)
    set_gemma_limits(keyed_db, rpm=1, tpm=15000)
    assert call(keyed_db, 0, "filler", None)["granted"]
    answer, _ = wait_as_told(pooled(db_url), 300, "psql")
    assert (answer["granted"], answer["reason"]) == (False, "wait_timeout")
    assert answer["waited_ms"] >= 300 and answer["retry_after_ms"] > 50_000  # truthful
    [refused] = [d for d in audit(keyed_db, "refused") if d.get("caller") == "psql"]
    assert refused["reason"] == "wait_timeout"


def test_it_lines_up_behind_ticket_holders(keyed_db: Conn, db_url: str) -> None:
    fill(keyed_db)
    ahead = call(keyed_db, 10_000, "ahead", uuid.uuid4())
    assert ahead["reason"] == "queued"
    order: list[str] = []

    def wait(name: str, ticket: uuid.UUID | None) -> None:
        with psycopg.connect(pooled(db_url), autocommit=True, prepare_threshold=None) as db:
            while True:
                answer = call(db, 10_000, name, ticket)
                if answer["reason"] != "queued":
                    break
                ticket = answer["ticket"]
                time.sleep(answer["retry_after_ms"] / 1000)
        assert answer["granted"], answer
        order.append(name)

    holder = threading.Thread(target=wait, args=("ahead", ahead["ticket"]))
    newcomer = threading.Thread(target=wait, args=("psql", None))
    newcomer.start()  # calls first, but its place is behind the holder's
    holder.start()
    holder.join(timeout=15)
    newcomer.join(timeout=15)
    assert order == ["ahead", "psql"]
