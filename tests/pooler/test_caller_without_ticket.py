"""A caller that knows nothing about slices or tickets (psql, PostgREST, another SDK), on a
direct connection: one call waits at most one slice, and answers a grant or a refusal whose
retry_after_ms is truthful, never later than its max_wait_ms.

The contract (README, "Pooler"; acquire's comment):
* no ticket holder in line: the call waits in the database up to min(max_wait_ms,
  wait_slice_ms); if the slice ends first it is refused with the binding limit (rpm, ...) and
  the time that limit frees; if max_wait_ms ends first, wait_timeout;
* ticket holders in line: refused at once, reason 'queued', retry_after_ms no sooner than the
  window can serve them and it;
* every such answer is audited, as before.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from tests.client.support import GEMMA, Conn, audit, set_gemma_limits, set_window

WINDOW_MS, GUARD_MS = 3000, 100
HOLD = timedelta(milliseconds=WINDOW_MS + GUARD_MS)


def acquire(db: Conn, max_wait_ms: int, ticket: uuid.UUID | None = None) -> dict[str, Any]:
    cur = db.execute(
        "select * from public.acquire(model => %s, tokens => 10, mode => 'WAIT', "
        "max_wait_ms => %s, key_aliases => array['b1'], caller => 'psql', ticket => %s)",
        (GEMMA, max_wait_ms, ticket),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip([c.name for c in cur.description or []], row, strict=True))


def now(db: Conn) -> datetime:
    row = db.execute("select clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def fill(db: Conn, slice_ms: int) -> datetime:
    """Key b1's only slot taken; returns when it frees."""
    set_window(db, WINDOW_MS, GUARD_MS)
    set_gemma_limits(db, rpm=1, tpm=15000)
    db.execute("update public.google_ai_settings set wait_slice_ms = %s", (slice_ms,))
    assert acquire(db, 0)["granted"]
    row = db.execute("select max(granted_at) from public.google_ai_reservations").fetchone()
    assert row is not None
    freed: datetime = row[0] + HOLD
    return freed


def test_a_wait_shorter_than_the_slice_is_one_call(keyed_db: Conn) -> None:
    free_at = fill(keyed_db, slice_ms=5000)
    verdict = acquire(keyed_db, 8000)
    assert verdict["granted"] is True
    assert now(keyed_db) >= free_at
    assert 2500 <= verdict["waited_ms"] <= 5000


def test_the_slice_ends_with_the_binding_limit_and_when_it_frees(keyed_db: Conn) -> None:
    free_at = fill(keyed_db, slice_ms=500)
    verdict = acquire(keyed_db, 10_000)
    after = now(keyed_db)

    assert (verdict["granted"], verdict["reason"]) == (False, "rpm")
    assert 500 <= verdict["waited_ms"] < 10_000  # one slice, not the 10 s it offered
    # Truthful: the slot frees exactly then (computed a moment before `after`).
    left_ms = (free_at - after) / timedelta(milliseconds=1)
    assert left_ms <= verdict["retry_after_ms"] <= left_ms + 200, (left_ms, verdict)
    assert audit(keyed_db, "refused")[-1]["reason"] == "rpm"

    # Calling again as it says is granted, within the caller's own deadline.
    time.sleep(verdict["retry_after_ms"] / 1000)
    assert acquire(keyed_db, 10_000)["granted"] is True


def test_max_wait_shorter_than_the_slice_times_out_on_time(keyed_db: Conn) -> None:
    fill(keyed_db, slice_ms=2000)
    verdict = acquire(keyed_db, 300)
    assert (verdict["granted"], verdict["reason"]) == (False, "wait_timeout")
    assert verdict["retry_after_ms"] > 1000  # the window is still full


def test_ticket_holders_in_line_come_first(keyed_db: Conn) -> None:
    free_at = fill(keyed_db, slice_ms=2000)
    first = acquire(keyed_db, 20_000, ticket=uuid.uuid4())  # takes a place, as the client does
    assert (first["granted"], first["reason"], first["retry_after_ms"]) == (False, "queued", 0)

    verdict = acquire(keyed_db, 10_000)
    assert (verdict["granted"], verdict["reason"]) == (False, "queued")
    # The ticket holder takes the slot that frees at free_at; this caller's is a window later.
    earliest = (free_at + HOLD - now(keyed_db)) / timedelta(milliseconds=1)
    assert verdict["retry_after_ms"] >= earliest - 50, (verdict, earliest)
    assert audit(keyed_db, "refused")[-1]["reason"] == "queued"
