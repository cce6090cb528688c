"""One process of the end-to-end runs: its own Client, a few threads, WAIT until the deadline.

Kept out of the test modules so that spawned processes import only this and llm_limits. Each
grant's reservation id and waited_ms (the whole wait, as the database measured it) are read from
the client's own log records, and every statement the client sends is counted by name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, NamedTuple

from llm_limits import Client, RateLimited
from llm_limits.db import Rpc

WARM_UP_MODEL = "gemini-2.5-flash"


class Outcome(NamedTuple):
    name: str
    held: list[str]
    counts: dict[str, int]
    errors: list[str]
    grants: list[tuple[str, int]]  # (reservation_id, waited_ms) of each successful call
    statements: dict[str, int]  # statements sent, by name (db.Rpc.name)


class GrantLog(logging.Handler):
    """Collects (reservation_id, waited_ms) of every successful attempt."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.grants: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "outcome", None) == "commit":
            self.grants.append((str(record.reservation_id), int(record.waited_ms)))


def run(
    name: str,
    db_url: str,
    base_url: str,
    env: dict[str, str],
    threads: int,
    duration: float,
    ready: Queue[Any],
    go: Event,
    start: Any,
    results: Queue[Any],
) -> None:
    for var in ("GOOGLE_API_KEY", "GOOGLE_API_LOCALNAME", "GOOGLE_GEMINI_BASE_URL"):
        os.environ.pop(var, None)
    os.environ.update(env)
    client = Client(db_url, base_url=base_url, timeout=10.05, caller=name)
    held = client.held_keys()  # resolve keys and build SDK clients before the clock starts
    # A cold process spends up to ~0.5 s (on 2 busy CPUs) between its first grant and its
    # first request: one-time SDK and connection set-up that a long-running bot pays once and
    # a 100 ms guard cannot absorb. Warm up on another model, one call per group held.
    for _ in range(len({alias[0] for alias in held})):
        client.generate(WARM_UP_MODEL, "warm-up", mode="NO_WAIT")
    statements: Counter[str] = Counter()
    run_rpc = client._db.run

    def counted(rpc: Rpc[Any]) -> Any:
        statements[rpc.name] += 1
        return run_rpc(rpc)

    client._db.run = counted  # type: ignore[method-assign]
    grant_log = GrantLog()
    logger = logging.getLogger("llm_limits")
    logger.addHandler(grant_log)
    logger.setLevel(logging.INFO)
    ready.put((name, held))
    go.wait()
    stop_at = start.value + duration
    while time.time() < start.value:
        time.sleep(0.001)
    counts = {"ok": 0, "refused": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def loop(index: int) -> None:
        while (left := stop_at - time.time()) > 0:
            try:
                client.generate(
                    "gemma-3-27b", f"{name}/{index}: Привет! ping", mode="WAIT", max_wait=left
                )
                outcome = "ok"
            except RateLimited:
                outcome = "refused"
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                counts[outcome] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    client.close()
    results.put(Outcome(name, held, counts, errors, grant_log.grants, dict(statements)))
