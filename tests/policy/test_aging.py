"""Aging, through PgBouncer: interactive demand above the whole limit does not starve a batch waiter.

Four `interactive` callers WAIT back to back on a model of 2 requests per (scaled) 2 s window, so
there is always an interactive waiter ahead by priority. A `batch` caller joins the line: its rank
falls to the top over aging_ms, so it is granted within aging_ms plus one hold (the slot it then
heads the line for frees within a hold). With aging set to a day, the same batch waiter is still in
line when the bound has passed: aging, not luck, served it.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.conftest import pooled
from tests.support import Conn, acquire, add_key, add_model

WINDOW_MS, GUARD_MS, AGING_MS = 2000, 200, 4000
BOUND_S = (AGING_MS + WINDOW_MS + GUARD_MS) / 1000


def prepare(db: Conn, aging_ms: int) -> None:
    add_model(db, "aging-model", 2, None, None)
    add_key(db, "aging-key", "aging-proj")
    db.execute(
        "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s, aging_ms = %s",
        (WINDOW_MS, GUARD_MS, aging_ms),
    )
    db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class) values"
        " ('bot', 'interactive'), ('notebook', 'batch')"
    )


def batch_wait_under_interactive_flood(url: str, batch_max_wait_ms: int) -> tuple[bool, float]:
    """(granted, seconds) of one batch WAIT while four interactive callers flood the model."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def interactive() -> None:
        try:
            with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                while not stop.is_set():
                    acquire(conn, "aging-model", 1, mode="WAIT", max_wait_ms=30_000, caller="bot")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    flood = [threading.Thread(target=interactive) for _ in range(4)]
    for t in flood:
        t.start()
    time.sleep(1.0)  # the line is full of interactive waiters before the batch joins
    try:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            started = time.monotonic()
            granted = acquire(
                conn, "aging-model", 1, mode="WAIT", max_wait_ms=batch_max_wait_ms,
                caller="notebook",
            )[0]  # fmt: skip
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        for t in flood:
            t.join(timeout=60)
    assert errors == []
    return bool(granted), elapsed


def test_a_batch_waiter_is_served_within_the_aging_bound(db: Conn, db_url: str) -> None:
    prepare(db, AGING_MS)
    granted, elapsed = batch_wait_under_interactive_flood(pooled(db_url), 30_000)
    assert granted and elapsed <= BOUND_S, elapsed
    batch, interactive = db.execute(
        "select count(*) filter (where caller_class = 'batch'),"
        " count(*) filter (where caller_class = 'interactive')"
        " from public.google_ai_reservations where model = 'aging-model'"
    ).fetchone() or (0, 0)
    assert batch == 1 and interactive >= 4  # the flood was served meanwhile


@pytest.mark.parametrize("aging_ms", [86_400_000])
def test_without_aging_the_batch_waiter_would_still_wait(
    db: Conn, db_url: str, aging_ms: int
) -> None:
    prepare(db, aging_ms)
    granted, elapsed = batch_wait_under_interactive_flood(
        pooled(db_url), int(BOUND_S * 1000) + 2000
    )
    assert not granted and elapsed > BOUND_S, elapsed
