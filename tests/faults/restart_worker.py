"""One process of test_postgres_restart.py: its own Client, a few threads in a WAIT loop.

Kept out of the test module so that spawned processes import only this and llm_limits. Every
reservation the client saw committed (the ``on_usage`` hook) is reported with its wall-clock
time; every LimitsError (with when its call began) and every 'X failed' warning of the client
is timed, and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from llm_limits import Client, DatabaseError, LimitsError, Usage

GEMMA = "gemma-3-27b"
WARM_UP_MODEL = "gemini-2.5-flash"


class _Warnings(logging.Handler):
    """Times the client's own warnings, e.g. 'settle failed; the grant stays counted ...'."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        # "settle failed; the grant stays counted until its lease ends: ..."
        what = record.getMessage().split(":")[0].split(";")[0]
        if what.endswith(" failed"):
            self.times.append((what, record.created))


def run(
    name: str,
    db_url: str,
    base_url: str,
    env: dict[str, str],
    threads: int,
    max_wait: float,
    ready: Queue[Any],
    go: Event,
    start: Any,
    stop: Any,
    results: Queue[Any],
) -> None:
    for var in ("GOOGLE_API_KEY", "GOOGLE_API_LOCALNAME", "GOOGLE_GEMINI_BASE_URL"):
        os.environ.pop(var, None)
    os.environ.update(env)
    warnings = _Warnings()
    logging.getLogger("llm_limits").addHandler(warnings)
    committed: list[tuple[str, float]] = []
    lock = threading.Lock()

    def on_usage(usage: Usage) -> None:
        with lock:
            committed.append((usage.reservation_id, time.time()))

    client = Client(
        db_url,
        base_url=base_url,
        timeout=10.0,
        caller=name,
        on_usage=on_usage,
        connect_timeout=2,
    )
    held = client.held_keys()
    # A cold process spends up to ~0.5 s between its first grant and its first request
    # (one-time SDK set-up); warm up on another model so gemma's 100 ms guard is not tested.
    for _ in range(len({alias[0] for alias in held})):
        client.generate(WARM_UP_MODEL, "warm-up", mode="NO_WAIT")
    with lock:
        committed.clear()
    ready.put(name)
    go.wait()
    while time.time() < start.value:
        time.sleep(0.001)
    returned: list[float] = []  # generate() gave an answer (committed or not)
    failures: list[tuple[str, float, str, float]] = []  # kind, when, message, call began
    unexpected: list[str] = []

    def loop(index: int) -> None:
        n = 0
        while time.time() < stop.value:  # the test moves it once the server is back
            n += 1
            began = time.time()
            try:
                client.generate(GEMMA, f"{name}/{index} call {n}", mode="WAIT", max_wait=max_wait)
            except LimitsError as exc:
                with lock:
                    failures.append((type(exc).__name__, time.time(), str(exc)[:200], began))
                if isinstance(exc, DatabaseError):
                    time.sleep(0.05)  # the database is restarting: don't spin
                continue
            except Exception as exc:
                with lock:
                    unexpected.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                returned.append(time.time())

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    client.close()
    results.put(
        {
            "name": name,
            "committed": committed,
            "returned": returned,
            "failures": failures,
            "unexpected": unexpected,
            "warnings": warnings.times,
        }
    )
