"""One bot process of the end-user runs: its own Client on its own connections, two threads
calling for the same people until the deadline. Kept out of the test modules so that spawned
processes import only this and llm_limits."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from llm_limits import Client, RateLimited


def run(
    name: str, db_url: str, base_url: str, env: dict[str, str], people: list[str],
    duration: float, ready: Queue[Any], go: Event, results: Queue[Any],
) -> None:  # fmt: skip
    os.environ.update(env)
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    with Client(db_url, base_url=base_url, caller="telegram-bot", timeout=10.0) as client:
        client.held_keys()
        ready.put(name)
        go.wait(30)
        deadline = time.monotonic() + duration

        def person_loop(person: str) -> None:
            while time.monotonic() < deadline:
                try:
                    client.generate("gemma-3-27b", "hi", mode="NO_WAIT", end_user=person)
                    outcome = "granted"
                except RateLimited as refused:
                    outcome = refused.reason
                    time.sleep(0.02)
                with lock:
                    counts[outcome] += 1

        threads = [threading.Thread(target=person_loop, args=(p,)) for p in people]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    results.put((name, dict(counts)))
