"""A caller that takes a grant and is then SIGKILLed by test_killed_caller.py.

Run as ``python -m tests.faults.doomed_caller MODE DB_URL BASE_URL`` from the repository root,
with the key it may use in its environment. MODE:

* ``in-call``: the real client (real SDK over HTTP) calls the fake server, which hangs, so the
  process is killed while Google holds the request: acquire done, commit never sent.
* ``after-acquire``: a bare ``select public.acquire(...)`` on key b1; the process prints the reservation
  id and sleeps, so it is killed before it has even sent the request.
"""

from __future__ import annotations

import sys
import time

import psycopg

from llm_limits import Client

GEMMA = "gemma-3-27b"


def main(mode: str, db_url: str, base_url: str) -> None:
    if mode == "in-call":
        client = Client(db_url, base_url=base_url, timeout=120.0, caller="doomed")
        client.generate(GEMMA, "a call that never returns", mode="NO_WAIT")
        raise SystemExit("the fake server answered; it should have hung")
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "select granted, reservation_id from public.acquire(model => %s, tokens => 10, "
            "mode => 'NO_WAIT', key_aliases => array['b1'], caller => 'doomed')",
            (GEMMA,),
        ).fetchone()
        assert row is not None and row[0], row
        print(row[1], flush=True)
        time.sleep(120)


if __name__ == "__main__":
    main(*sys.argv[1:4])
