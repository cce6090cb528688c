"""A WAIT caller that test_killed_waiters.py may SIGKILL while it waits in line.

Run as ``python -m tests.pooler.doomed_waiter DB_URL BASE_URL NAME`` from the repository root,
with key b1 in its environment. It prints ``ready``, waits for a line on stdin, then waits with
the real client (up to 25 s) and prints ``granted`` or ``refused REASON``.
"""

from __future__ import annotations

import sys

from llm_limits import Client, RateLimited

GEMMA = "gemma-3-27b"


def main(db_url: str, base_url: str, name: str) -> None:
    with Client(db_url, base_url=base_url, timeout=10.0, caller=name) as client:
        client.held_keys()
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            client.generate(GEMMA, f"{name}: Сколько будет дважды два?", mode="WAIT", max_wait=25)
        except RateLimited as exc:
            print(f"refused {exc.reason}", flush=True)
            return
        print("granted", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
