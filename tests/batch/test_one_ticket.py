"""A batch item that waits many slices holds one place in line, through PgBouncer.

One request per (scaled) 3 s window, two items: the second waits about a window. Its calls of
``acquire`` last one database slice (``wait_slice_ms`` 300 ms) and the batch's ``wait_slice``
is 0.5 s, so the wait spans several of either. What the database shows:

* one ticket: ``google_ai_internal.wait_tickets``, read every 50 ms while the run goes, holds
  one id for the caller, seen over more than three slices (a wait that took a new ticket each
  slice, as the batch once did, would show several, or one refusal per slice);
* no refusal: ``google_ai_refusals`` has no row for the caller (each lost ticket used to be a
  ``wait_timeout`` there);
* the grant's verdict (``acquire_result.waited_ms``, counted from the ticket's first call, in
  the client's log line) and its ledger row's ``waited_ms`` cover the whole wait.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest

from llm_limits import Client, batch

from ..client.support import Conn, hold
from ..conftest import pooled
from .conftest import MODEL, WARM_UP, MakeFake, add_batch_model

CALLER = "patient-notebook"
WINDOW_MS, GUARD_MS, DB_SLICE_MS, BATCH_SLICE_S = 3000, 500, 300, 0.5


def tickets_seen(url: str, stop: threading.Event) -> list[tuple[float, str]]:
    """(when, ticket id) of every read of the caller's places in line, until ``stop``."""
    seen: list[tuple[float, str]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                "select id::text from google_ai_internal.wait_tickets where caller = %s",
                (CALLER,),
            ).fetchall()
            seen.extend((time.monotonic(), row[0]) for row in rows)
            time.sleep(0.05)
    return seen


def test_an_item_waiting_many_slices_keeps_one_ticket(
    keyed_db: Conn,
    db_url: str,
    make_fake: MakeFake,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hold(monkeypatch, "b1")  # one quota group: one request per window in all
    add_batch_model(keyed_db, 1, window_ms=WINDOW_MS, guard_ms=GUARD_MS)
    keyed_db.execute("update public.google_ai_settings set wait_slice_ms = %s", (DB_SLICE_MS,))
    fake = make_fake(1, window_s=WINDOW_MS / 1000)
    url = pooled(db_url)
    stop = threading.Event()
    seen: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: seen.extend(tickets_seen(db_url, stop)))
    with Client(url, base_url=fake.base_url, timeout=10.0) as client:
        client.generate(WARM_UP, "warm-up", mode="NO_WAIT")  # set-up before the wait starts
        reader.start()
        caplog.set_level(logging.INFO, logger="llm_limits")
        try:
            results = batch(["first in line", "second in line"], model=MODEL, client=client,
                            caller=CALLER, db_url=url, checkpoint=tmp_path / "line.jsonl",
                            concurrency=2, progress=False, wait_slice=BATCH_SLICE_S)  # fmt: skip
        finally:
            stop.set()
            reader.join(30)

    assert [r.status for r in results] == ["ok", "ok"]
    assert len({ticket for _, ticket in seen}) == 1, seen
    span_s = seen[-1][0] - seen[0][0]
    assert span_s > 3 * max(BATCH_SLICE_S, DB_SLICE_MS / 1000), span_s
    refused = keyed_db.execute(
        "select count(*) from public.google_ai_refusals where caller = %s", (CALLER,)
    ).fetchone()
    assert refused == (0,)
    waits = sorted(
        int(r.__dict__["waited_ms"])
        for r in caplog.records
        if getattr(r, "outcome", None) == "commit" and getattr(r, "model", None) == MODEL
    )
    assert len(waits) == 2 and waits[1] >= span_s * 1000, (waits, span_s)
    ledger = keyed_db.execute(
        "select max(waited_ms) from public.google_ai_reservations where caller = %s and model = %s",
        (CALLER, MODEL),
    ).fetchone()
    assert ledger is not None and ledger[0] >= span_s * 1000, (ledger, span_s)
