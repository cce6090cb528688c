"""The bot's end users through the thin client: per-person limits that hold across bot
processes, a blocked person refused at no cost, and bad end_user values refused before
anything is counted. Time is scaled: a 2 s window with a 100 ms guard stands for a minute."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
import uuid
from typing import Any

import pytest

from llm_limits import Client, RateLimited, RpcError
from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.conftest import pooled

from . import end_user_worker
from .support import KEYS, Conn, hold, projects, set_gemma_limits, set_window

WINDOW_MS, GUARD_MS = 2000, 100
PER_PERSON = 6  # interactive's end_user_rpm


def bot_in_interactive(db: Conn) -> None:
    db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class)"
        " values ('telegram-bot', 'interactive')"
    )


def grant_times(db: Conn, person: str) -> list[float]:
    rows = db.execute(
        "select extract(epoch from r.granted_at)::float8 from public.google_ai_reservations as r"
        " where r.end_user_hash = google_ai_internal.end_user_hash(%s::text)"
        "   and r.counted_requests > 0 order by r.granted_at",
        (person,),
    ).fetchall()
    return [float(r[0]) for r in rows]


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The most grants in any span of window_s (each span starting at a grant)."""
    return max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)


def test_two_bot_processes_hold_each_persons_limit(
    keyed_db: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two OS processes, each its own Client on its own pooled connections, call for the same
    two people as fast as they are let: nobody gets more than 6 grants in any window."""
    bot_in_interactive(keyed_db)
    set_gemma_limits(keyed_db, rpm=1000, tpm=1_000_000)
    set_window(keyed_db, WINDOW_MS, GUARD_MS)
    people = ["tg:1001", "tg:1002"]
    env = {KEYS[a][0]: KEYS[a][2] for a in KEYS}
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    limits = {"gemma-3-27b-it": Limits(rpm=1000, tpm=1_000_000, rpd=100_000)}
    duration = 5.0
    with FakeGemini(projects(), limits, window=WINDOW_MS / 1000) as srv:
        shared = (srv.base_url, env, people, duration, ready, go, results)
        procs = [
            ctx.Process(target=end_user_worker.run, args=(name, pooled(db_url), *shared))
            for name in ("bot-a", "bot-b")
        ]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=60)
            go.set()
            counts = dict(results.get(timeout=duration + 60) for _ in procs)
        finally:
            for p in procs:
                p.join(timeout=30)
        assert srv.stats().rate_limited == 0
    for name, outcome in counts.items():
        assert outcome.get("granted", 0) > 0, (name, counts)  # both processes were served
    assert sum(c.get("end_user_limit", 0) for c in counts.values()) > 0, counts
    for person in people:
        times = grant_times(keyed_db, person)
        # Each person's limit was reached in every window of the run...
        assert len(times) >= PER_PERSON * int(duration * 1000 // (WINDOW_MS + GUARD_MS)), times
        # ...and never passed: at most 6 grants in any window.
        assert most_in_any_window(times, WINDOW_MS / 1000) <= PER_PERSON, (person, times)


def test_a_blocked_person_costs_the_pool_nothing(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    bot_in_interactive(keyed_db)
    keyed_db.execute("select public.block_end_user('tg:666', 'spam')")
    for _ in range(50):
        with pytest.raises(RateLimited) as refused:
            client.generate("gemma-3-27b", "buy now", caller="telegram-bot", end_user="tg:666")
        assert (refused.value.reason, refused.value.retry_after) == ("end_user_limit", None)
    with pytest.raises(RateLimited):  # a WAIT does not wait out a block
        client.generate("gemma-3-27b", "buy now", caller="telegram-bot", end_user="tg:666",
                        max_wait=5.0)  # fmt: skip
    assert keyed_db.execute("select count(*) from public.google_ai_reservations").fetchone() == (0,)
    assert fake.stats().requests == 0
    folds = keyed_db.execute("select reason, refusals from public.google_ai_refusals").fetchall()
    assert folds == [("end_user_limit", 51)]
    # Another person is served as usual.
    answer = client.generate("gemma-3-27b", "hi", caller="telegram-bot", end_user="tg:1")
    assert answer.text


@pytest.mark.parametrize(
    ("end_user", "detail"),
    [("", "0 characters"), ("x" * 201, "201 characters"), (123456, "int"), (b"tg:1", "bytes")],
    ids=["empty", "201 chars", "int", "bytes"],
)
def test_a_bad_end_user_is_ll007_and_changes_nothing(
    client: Client, keyed_db: Conn, fake: FakeGemini, end_user: Any, detail: str
) -> None:
    with pytest.raises(RpcError) as bad:
        client.generate("gemma-3-27b", "hi", end_user=end_user)
    assert bad.value.sqlstate == "LL007" and "end_user" in bad.value.message
    assert detail in (bad.value.detail or "")
    for table in ("google_ai_reservations", "google_ai_refusals", "google_ai_end_user_usage"):
        assert keyed_db.execute(f"select count(*) from public.{table}").fetchone() == (0,)
    assert keyed_db.execute("select count(*) from google_ai_internal.wait_tickets").fetchone() == (
        0,
    )
    assert fake.stats().requests == 0  # countTokens aside, nothing reached Google


async def test_agenerate_passes_the_end_user(client: Client, keyed_db: Conn) -> None:
    person = f"tg:{uuid.uuid4().int % 10**9}"
    await client.agenerate("gemma-3-27b", "hi", end_user=person)
    assert len(grant_times(keyed_db, person)) == 1


def test_a_flood_of_20_delays_another_person_by_one_slot_at_most(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fair turns, scaled: one group of 2 RPM over a 2 s window. One person's 20 messages wait
    in line; another person's one message, sent after them, is served first or second."""
    hold(monkeypatch, "a1")
    bot_in_interactive(keyed_db)
    set_gemma_limits(keyed_db, rpm=2, tpm=1_000_000)
    set_window(keyed_db, WINDOW_MS, GUARD_MS)
    keyed_db.execute("select public.limit_end_user('tg:flood', rpm => 1000)")
    with Client(db_url, base_url=fake.base_url, caller="telegram-bot", timeout=10.0) as bot:
        for _ in range(2):  # the window is full: everyone after this waits in line
            bot.generate("gemma-3-27b", "hi", mode="NO_WAIT", end_user="tg:filler")

        def ask(person: str) -> None:
            with contextlib.suppress(RateLimited):
                bot.generate("gemma-3-27b", "hi", max_wait=6.0, end_user=person)

        flood = [threading.Thread(target=ask, args=("tg:flood",)) for _ in range(20)]
        for t in flood:
            t.start()
        waiting_for(keyed_db, 20)
        other = threading.Thread(target=ask, args=("tg:other",))
        other.start()
        other.join(timeout=30)
        for t in flood:
            t.join(timeout=30)
    # From the moment the other person's wait began (the ledger's waited_ms counts from the
    # ticket's first call) to their grant, the flood was served once at most in that line. A
    # flood message that waited past interactive's fallback_after_ms (2 s, the window's
    # length) is served by a fallback model at once, outside the line: not a turn taken.
    row = keyed_db.execute(
        "select r.granted_at - pg_catalog.make_interval(secs => r.waited_ms / 1000.0),"
        " r.granted_at, r.model from public.google_ai_reservations as r"
        " where r.end_user_hash = google_ai_internal.end_user_hash('tg:other')"
    ).fetchone()
    assert row is not None, "the other person was not served"
    began, granted, model = row
    flood_first = keyed_db.execute(
        "select count(*) from public.google_ai_reservations as r"
        " where r.end_user_hash = google_ai_internal.end_user_hash('tg:flood')"
        " and r.model = %s and r.granted_at > %s and r.granted_at < %s",
        (model, began, granted),
    ).fetchone()
    assert flood_first is not None and flood_first[0] <= 1, (flood_first, began, granted, model)


def waiting_for(db: Conn, tickets: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute("select count(*) from google_ai_internal.wait_tickets").fetchone()
        if row is not None and row[0] >= tickets:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {tickets} tickets in line after {timeout} s")
