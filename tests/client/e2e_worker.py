"""One process of the end-to-end run: its own Client, a few threads, WAIT until the deadline.

Kept out of the test module so that spawned processes import only this and llm_limits.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from llm_limits import Client, RateLimited

WARM_UP_MODEL = "gemini-2.5-flash"


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
    client = Client(db_url, base_url=base_url, timeout=10.0, backoff=0.05, caller=name)
    held = client.held_keys()  # resolve keys and build SDK clients before the clock starts
    # A cold process spends up to ~0.5 s (on 2 busy CPUs) between its first grant and its
    # first request: one-time SDK and connection set-up that a long-running bot pays once and
    # a 100 ms guard cannot absorb. Warm up on another model, one call per group held.
    for _ in range(len({alias[0] for alias in held})):
        client.generate(WARM_UP_MODEL, "warm-up", mode="NO_WAIT")
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
                client.generate("gemma-3-27b", f"{name}/{index} ping", mode="WAIT", max_wait=left)
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
    results.put((name, held, counts, errors))
