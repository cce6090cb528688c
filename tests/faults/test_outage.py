"""Fault: the database is away for a moment (stopped, then started again), one call at a time.

Injected: a cluster of this module's own, stopped with ``pg_ctl stop -m fast`` and started
again on the same port (``localstack.stop`` / ``start_again``), around one ``generate`` of a
client whose keys and token counter are already resolved (its first database call is acquire).

Asserted (issue 23: a call that loses its connection retries on a fresh one, with backoff,
until its own deadline; only a database still down at the deadline is an error):

* a call made while the database is away, which comes back 0.5 s later, is granted and
  answered, and its answer committed: a NO_WAIT (no wait budget: it rides out 2 s), a WAIT
  (max_wait 3 s), and a NO_WAIT on asyncio;
* a WAIT whose deadline passes with the database still away raises ``DatabaseUnavailable``
  and calls Google not at all;
* an answer served while the database is away (stopped while the call is at Google, started
  again after the answer came back) is settled once the database is back: ``generate``
  returns it, its ledger row is ``committed`` with its ``token_usage`` row, ``on_usage`` ran,
  and no settle failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import llm_limits
from llm_limits import Client, Usage
from llm_limits.local import localstack
from llm_limits.local.fake_gemini import FakeGemini
from tests.client.support import GEMMA, projects
from tests.support import until

from .private_cluster import keyed_database

AWAY_S = 0.5


@pytest.fixture(scope="module")
def outage_url(cluster: localstack.LocalCluster) -> str:
    return keyed_database(cluster, "outage")


def ledger(url: str, request_id: str) -> list[tuple[str, int]]:
    """(status, token_usage rows) of each reservation made for ``request_id``."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "select r.status, (select count(*) from public.token_usage as u"
            " where u.meta ->> 'reservation_id' = r.id::text)::int"
            " from public.google_ai_reservations as r where r.request_id = %s",
            (request_id,),
        ).fetchall()


def away_for(cluster: localstack.LocalCluster, seconds: float, call: Callable[[], Any]) -> Any:
    """Stop the server, run ``call`` in a thread, start the server again ``seconds`` later;
    what ``call`` returned (or raised)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:
            outcome["value"] = exc

    localstack.stop(cluster)
    caller = threading.Thread(target=run)
    caller.start()
    time.sleep(seconds)
    localstack.start_again(cluster)
    caller.join(timeout=30)
    assert not caller.is_alive()
    return outcome["value"]


@pytest.mark.parametrize(("mode", "max_wait"), [("NO_WAIT", 0.0), ("WAIT", 3.0)])
def test_a_call_made_while_the_database_is_away_is_served_once_it_is_back(
    outage_url: str, running: localstack.LocalCluster, fake: FakeGemini, mode: str, max_wait: float
) -> None:
    rid = f"away-{mode}"
    with Client(outage_url, base_url=fake.base_url, timeout=10.0) as client:
        client.generate(GEMMA, "warm-up")  # keys and counter resolved: acquire comes first
        answer = away_for(
            running,
            AWAY_S,
            lambda: client.generate(GEMMA, "hi", mode=mode, max_wait=max_wait, request_id=rid),
        )
    assert not isinstance(answer, Exception), repr(answer)
    assert answer.text == "fake reply to: hi"
    assert ledger(outage_url, rid) == [("committed", 1)]


async def test_an_async_call_made_while_the_database_is_away_is_served(
    outage_url: str, running: localstack.LocalCluster, fake: FakeGemini
) -> None:
    rid = "away-async"
    client = Client(outage_url, base_url=fake.base_url, timeout=10.0)
    await client.agenerate(GEMMA, "warm-up")
    localstack.stop(running)
    call = client.agenerate(GEMMA, "hi", mode="NO_WAIT", request_id=rid)
    back = threading.Timer(AWAY_S, localstack.start_again, (running,))
    back.start()
    try:
        answer = await call
    finally:
        back.join()
        await client.aclose()
    assert answer.text == "fake reply to: hi"
    assert ledger(outage_url, rid) == [("committed", 1)]


def test_a_database_still_away_at_the_deadline_is_raised(
    outage_url: str, running: localstack.LocalCluster, fake: FakeGemini
) -> None:
    with Client(outage_url, base_url=fake.base_url, timeout=10.0) as client:
        client.generate(GEMMA, "warm-up")
        served = fake.stats().requests
        outcome = away_for(
            running, 4.0, lambda: client.generate(GEMMA, "hi", mode="WAIT", max_wait=1.0)
        )
    assert isinstance(outcome, llm_limits.DatabaseUnavailable), repr(outcome)
    assert fake.stats().requests == served  # failed closed


def test_an_answer_served_while_the_database_is_away_is_settled_once_it_is_back(
    outage_url: str, running: localstack.LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llm_limits")
    usages: list[Usage] = []
    rid, latency = "served-while-away", 1.5
    with (
        FakeGemini(projects(), latency=latency) as slow,
        Client(outage_url, base_url=slow.base_url, timeout=10.0, on_usage=usages.append) as client,
    ):
        client.generate(GEMMA, "warm-up", mode="NO_WAIT")
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["answer"] = client.generate(GEMMA, "hi", request_id=rid)
            except Exception as exc:  # asserted below
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        until(
            lambda: sum(len(g) for g in slow.stats().grants.values()) == 2,  # the warm-up's too
            lambda: f"the call at Google {outcome}",
            caller,
        )
        localstack.stop(running)
        time.sleep(latency + 0.5)  # the answer is back; its settle finds nobody listening
        localstack.start_again(running)
        caller.join(timeout=30)
    assert "error" not in outcome, outcome
    assert outcome["answer"].text == "fake reply to: hi"
    assert ledger(outage_url, rid) == [("committed", 1)]
    assert [u.request_id for u in usages][1:] == [rid]  # after the warm-up's
    assert not [r.getMessage() for r in caplog.records if "settle failed" in r.getMessage()]
