"""The llm-gateway rides out a database restart as the Python client does (issue 23).

Injected: a cluster of this module's own (tests/faults' ``cluster``: the shared test cluster is
never touched), restarted with ``pg_ctl restart -m fast`` or stopped and started again on the
same port, under a gateway (Deno, as ``llm_limits_gateway``) in front of the fake Gemini; the
real SDK calls the gateway.

Asserted:

* 12 callers looping WAIT calls (``x-llm-limits-max-wait: 5``) through one gateway on gemma at
  RPM 8 per project (2 s window, 300 ms guard, 150 ms per call), restarted at the first moment
  all 12 hold a place in line: no caller got an error, the fake answered no 429, every answer
  it served is ``committed`` in the ledger, and the gateway logged no failed settle;
* a call made while the database is away (its caller check is the first statement), which
  comes back 0.5 s later, is answered and committed: NO_WAIT and WAIT;
* an answer served while the database is away (stopped while the call is at Google, started
  again after the answer came back) is committed once the database is back.

Run with ``-s`` to see the numbers of the restart run.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from google.genai import errors

from llm_limits.local import localstack
from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.faults.conftest import cluster, running
from tests.faults.private_cluster import keyed_database, line_fills
from tests.support import until

from ..client.support import projects, set_gemma_limits, set_window
from .harness import Gateway, add_caller, launch

__all__ = ["cluster", "running"]

GEMMA = "gemma-3-27b-it"
WINDOW_MS, GUARD_MS, RPM, CALLERS = 2000, 300, 8, 12


@pytest.fixture(scope="module")
def restart_url(cluster: localstack.LocalCluster) -> str:
    url = keyed_database(cluster, "gw_restart")
    with psycopg.connect(url, autocommit=True) as conn:
        set_window(conn, WINDOW_MS, GUARD_MS)
        set_gemma_limits(conn, rpm=RPM, tpm=15000)
    return url


def gateway(url: str, google: FakeGemini, log: Path) -> tuple[Gateway, str]:
    gw = launch(url, google.base_url, ("a1", "a2", "b1"), log)
    with psycopg.connect(url, autocommit=True) as conn:
        token = add_caller(conn, f"caller-{uuid.uuid4().hex[:6]}", [GEMMA])
    return gw, token


def ledger(url: str) -> Counter[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select status from public.google_ai_reservations where api_model = %s", (GEMMA,)
        ).fetchall()
    return Counter(r[0] for r in rows)


def windows_clear(url: str) -> None:
    """Once every grant of the module's earlier tests has left its window: a test that begins
    with one call must not find the windows of the one before it still full."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select greatest(0, extract(epoch from max(granted_at) + %s * interval '1 ms'"
            " - clock_timestamp())) from public.google_ai_reservations",
            (WINDOW_MS + GUARD_MS,),
        ).fetchone()
    time.sleep(float(row[0]) if row else 0.0)


def test_twelve_callers_in_line_ride_out_a_fast_restart(
    restart_url: str, running: localstack.LocalCluster, tmp_path: Path
) -> None:
    limits = {GEMMA: Limits(rpm=RPM, tpm=15000, rpd=14400)}
    before = ledger(restart_url)
    answers: list[float] = []
    failures: list[str] = []
    stop = [time.time() + 600.0]
    with FakeGemini(projects(), limits, latency=0.15, window=WINDOW_MS / 1000) as fake:
        gw, token = gateway(restart_url, fake, tmp_path / "gateway.log")
        try:

            def loop(i: int) -> None:
                sdk = gw.sdk(token, **{"x-llm-limits-max-wait": "5"})
                n = 0
                while time.time() < stop[0]:
                    n += 1
                    try:
                        sdk.models.generate_content(model=GEMMA, contents=f"caller {i} call {n}")
                        answers.append(time.time())
                    except errors.APIError as err:
                        failures.append(f"{err.code} {err.message}"[:200])
                    except Exception as exc:  # a timeout of the SDK's own
                        failures.append(f"{type(exc).__name__}: {exc}"[:200])

            callers = [threading.Thread(target=loop, args=(i,)) for i in range(CALLERS)]
            for t in callers:
                t.start()
            time.sleep(2.5)
            in_line = line_fills(restart_url, CALLERS)
            began = time.time()
            localstack.restart(running)
            back = time.time()
            stop[0] = back + 4.5
            for t in callers:
                t.join(timeout=60)
        finally:
            stop[0] = 0.0
            gw.stop()
        stats = fake.stats()
    statuses = ledger(restart_url) - before
    after = sum(t > back for t in answers)
    print(  # the observed numbers, for `pytest -s`
        f"\n[gateway] {in_line} callers in line, server away {back - began:.2f}s; answers "
        f"{len(answers)} ({after} after the restart); errors {Counter(failures)}; ledger "
        f"{dict(statuses)}; fake {stats.summary()}"
    )

    assert in_line == CALLERS, f"{in_line} callers waiting in line when the server went away"
    assert not failures, Counter(failures)
    assert after > 0
    assert stats.rate_limited == 0, stats.summary()
    assert len(answers) == sum(len(g) for g in stats.grants.values()) == statuses["committed"]
    assert set(statuses) <= {"committed", "reserved"}, statuses  # reserved: a reply cut off
    assert "settle_failed" not in gw.log()


@pytest.mark.parametrize("mode", ["NO_WAIT", "WAIT"])
def test_a_call_made_while_the_database_is_away_is_answered_once_it_is_back(
    restart_url: str, running: localstack.LocalCluster, tmp_path: Path, mode: str
) -> None:
    before = ledger(restart_url)["committed"]
    windows_clear(restart_url)
    with FakeGemini(projects()) as fake:
        gw, token = gateway(restart_url, fake, tmp_path / "gateway.log")
        try:
            sdk = gw.sdk(token, **{"x-llm-limits-mode": mode, "x-llm-limits-max-wait": "3"})
            sdk.models.generate_content(model=GEMMA, contents="warm-up")
            localstack.stop(running)
            back = threading.Timer(0.5, localstack.start_again, (running,))
            back.start()
            try:
                answer = sdk.models.generate_content(model=GEMMA, contents="hi")
            finally:
                back.join()
        finally:
            gw.stop()
    assert answer.text == "fake reply to: hi"
    assert ledger(restart_url)["committed"] == before + 2


def test_an_answer_served_while_the_database_is_away_is_committed_once_it_is_back(
    restart_url: str, running: localstack.LocalCluster, tmp_path: Path
) -> None:
    before = ledger(restart_url)["committed"]
    windows_clear(restart_url)
    latency = 1.5
    outcome: dict[str, Any] = {}
    with FakeGemini(projects(), latency=latency) as slow:
        gw, token = gateway(restart_url, slow, tmp_path / "gateway.log")
        try:
            sdk = gw.sdk(token)

            def call() -> None:
                try:
                    outcome["answer"] = sdk.models.generate_content(model=GEMMA, contents="hi")
                except Exception as exc:  # asserted below
                    outcome["error"] = exc

            caller = threading.Thread(target=call)
            caller.start()
            until(
                lambda: bool(slow.stats().grants), lambda: f"the call at Google {outcome}", caller
            )
            localstack.stop(running)
            time.sleep(latency + 0.5)  # the answer is back; its settle finds nobody listening
            localstack.start_again(running)
            caller.join(timeout=30)
        finally:
            gw.stop()
    assert "error" not in outcome, outcome
    assert outcome["answer"].text == "fake reply to: hi"
    assert ledger(restart_url)["committed"] == before + 1
    assert "settle_failed" not in gw.log()
