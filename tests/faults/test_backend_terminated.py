"""Fault: the backend serving a waiting acquire dies (``pg_terminate_backend``).

Injected: one caller runs ``client.generate(..., mode="WAIT", max_wait=...)`` on a full window
(gemma RPM 1, one key held, the slot taken by another caller's grant, 60 s window), so its
acquire sleeps inside the database. The test finds that backend in ``pg_stat_activity``
(``public.acquire``, active) and terminates it, once or every time it shows up.

Observed:

* the terminated acquire's transaction is rolled back: it leaves no ledger row and no audit
  row (not even a ``refused`` one); the client sees SQLSTATE 57P01, reconnects once and sends
  the same acquire again;
* killed once, then the slot released: the retry is granted and ``generate`` returns the
  answer (one ledger row for this caller, ``committed``) ~0.1 s after the call began;
* killed three times: the client retries each time (at once, then after a short backoff)
  until its deadline, the ticket keeping its place, and is granted once the slot is released
  (it raised ``DatabaseUnavailable`` at the second kill before issue 23); the terminated
  acquires left nothing behind;
* killed once with nothing released: the client retries the acquire, with the wait
  recomputed from the caller's deadline, so the caller is never held past its max_wait
  (this overshot to 4.5 s of a 3 s max_wait before the fix): the retry asks for what was
  left of the wait, not a fresh one. The test reads the retry's
  max_wait_ms from its refusal; how long the call took is measured by `make bench`
  (bench/client_waits.py);
* all backends terminated (what a restart does) while a client has 3 idle connections from 3
  earlier concurrent calls: the first lost connection discards every idle one, so the next
  ``generate`` succeeds on a fresh connection (it raised ``DatabaseUnavailable`` before the fix).

A database that cannot be reached at all (a DSN to a closed port) is covered by
tests/client/test_database.py::test_unreachable_database_fails_closed (and its async twin):
``DatabaseUnavailable``, and the fake server sees 0 requests; one still down at a call's
deadline, and one back before it, by tests/faults/test_outage.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import FakeGemini
from tests.client.support import GEMMA, Conn, hold, projects, set_gemma_limits, set_window

CALLER = "victim"


def admin_conn(db_url: str) -> Conn:
    return psycopg.connect(db_url, autocommit=True)


def waiting_backend(conn: Conn, timeout: float = 10.0, other_than: int | None = None) -> int:
    """The pid of the victim's acquire once it is sleeping in the database."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "select pid from pg_stat_activity where datname = current_database() "
            "and pid <> pg_backend_pid() and state = 'active' and query like %s "
            "and pid is distinct from %s",
            ("%public.acquire%", other_than),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("the victim's acquire never showed up in pg_stat_activity")


def terminate(conn: Conn, pid: int) -> None:
    row = conn.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()
    assert row == (True,)


class Victim(threading.Thread):
    def __init__(self, client: Client, max_wait: float) -> None:
        super().__init__(daemon=True)
        self.client, self.max_wait = client, max_wait
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.client.generate(
                GEMMA, "hello", mode="WAIT", max_wait=self.max_wait, caller=CALLER
            )
        except BaseException as exc:
            self.error = exc


def fill_the_window(db: Conn) -> Any:
    """Take b1's only slot for a minute, as another caller; returns its reservation id."""
    set_window(db, 60_000, 1000)
    set_gemma_limits(db, rpm=1, tpm=15000)
    row = db.execute(
        "select granted, reservation_id from public.acquire(model => %s, tokens => 10, "
        "mode => 'NO_WAIT', key_aliases => array['b1'], caller => 'blocker')",
        (GEMMA,),
    ).fetchone()
    assert row is not None and row[0]
    return row[1]


def victim_rows(db: Conn) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ledger = db.execute(
        "select status from public.google_ai_reservations where caller = %s", (CALLER,)
    ).fetchall()
    audit = db.execute(
        "select event from public.google_ai_audit_log where details ->> 'caller' = %s order by ts, id",
        (CALLER,),
    ).fetchall()
    return ledger, audit


@pytest.fixture
def victim_client(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> Any:
    hold(monkeypatch, "b1")
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        assert client.held_keys() == ["b1"]  # resolved now, not while the test watches
        yield client


def test_killed_once_the_retry_is_granted(
    keyed_db: Conn, db_url: str, fake: FakeGemini, victim_client: Client
) -> None:
    blocker = fill_the_window(keyed_db)
    victim = Victim(victim_client, max_wait=10.0)
    victim.start()
    with admin_conn(db_url) as admin:
        first = waiting_backend(admin)
        terminate(admin, first)
        retry = waiting_backend(admin, other_than=first)  # reconnected, waiting again
        assert retry != first
        # Nothing of the terminated acquire survived: the blocker is still the only row.
        assert victim_rows(keyed_db) == ([], [])
        keyed_db.execute("select * from public.settle(%s, null, null, 'not_sent')", (blocker,))
        victim.join(timeout=15)
    assert not victim.is_alive()

    assert victim.error is None, repr(victim.error)
    assert victim.result.text == "fake reply to: hello"
    assert fake.stats().requests == 1
    assert victim_rows(keyed_db) == ([("committed",)], [("granted",)])
    assert keyed_db.execute(
        "select count(*) from public.google_ai_reservations where status = 'reserved'"
    ).fetchone() == (0,)


def test_killed_again_and_again_the_call_rides_on_until_granted(
    keyed_db: Conn, db_url: str, fake: FakeGemini, victim_client: Client
) -> None:
    blocker = fill_the_window(keyed_db)
    victim = Victim(victim_client, max_wait=10.0)
    victim.start()
    with admin_conn(db_url) as admin:
        killed: list[int] = []
        for _ in range(3):
            pid = waiting_backend(admin, other_than=killed[-1] if killed else None)
            terminate(admin, pid)
            killed.append(pid)
        waiting_backend(admin, other_than=killed[-1])  # back in line once more
        assert victim_rows(keyed_db) == ([], [])  # nothing of the terminated acquires
        keyed_db.execute("select * from public.settle(%s, null, null, 'not_sent')", (blocker,))
        victim.join(timeout=15)
    assert not victim.is_alive()

    assert victim.error is None, repr(victim.error)
    assert victim.result.text == "fake reply to: hello"
    assert fake.stats().requests == 1
    assert victim_rows(keyed_db) == ([("committed",)], [("granted",)])


def test_a_retried_acquire_keeps_the_callers_deadline(
    keyed_db: Conn, db_url: str, victim_client: Client
) -> None:
    fill_the_window(keyed_db)
    # One slice longer than the whole wait: the retry is the wait's last acquire, and its
    # refusal records the max_wait_ms it was sent (a fresh deadline would send all 6,000).
    # The wait counts from the call, so the prompt's first count (the local tokenizer's
    # first try) comes out of it too: 6 s leave room for that on a loaded machine.
    keyed_db.execute("update public.google_ai_settings set wait_slice_ms = 60000")
    victim = Victim(victim_client, max_wait=6.0)
    victim.start()
    with admin_conn(db_url) as admin:
        pid = waiting_backend(admin)
        time.sleep(1.5)
        terminate(admin, pid)
        victim.join(timeout=12.0)
    assert not victim.is_alive()

    assert isinstance(victim.error, llm_limits.RateLimited), repr(victim.error)
    assert victim.error.reason == "wait_timeout"
    assert victim_rows(keyed_db) == ([], [("refused",)])
    [refusal] = keyed_db.execute(
        "select details from public.google_ai_audit_log where event = 'refused' "
        "and details ->> 'caller' = %s",
        (CALLER,),
    ).fetchall()
    # The kill came 1.5 s or more into the call: at most 4.5 s were left for the retry.
    assert 0 < refusal[0]["max_wait_ms"] <= 6000 - 1500, refusal


def test_every_stale_idle_connection_is_dropped_after_a_restart(
    keyed_db: Conn, db_url: str
) -> None:
    """What a server restart does to a client that has served several threads at once."""
    with (
        FakeGemini(projects(), latency=0.3) as srv,
        Client(db_url, base_url=srv.base_url, timeout=10.0) as client,
    ):
        callers = [
            threading.Thread(target=client.generate, args=(GEMMA, f"call {i}")) for i in range(3)
        ]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        assert srv.stats().ok == 3  # three connections now sit idle in the client
        with admin_conn(db_url) as admin:
            killed = admin.execute(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where datname = current_database() and pid <> pg_backend_pid() "
                "and pid <> %s",
                (keyed_db.info.backend_pid,),
            ).fetchone()
        assert killed is not None and killed[0] >= 2

        assert client.generate(GEMMA, "after the restart").text  # the database is up
