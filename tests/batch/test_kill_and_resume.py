"""A batch killed mid-run (SIGKILL, as a kernel restart does) and resumed from its checkpoint.

The fake Gemini counts, per prompt, how often it answered (``Stats.served``); that count, not
the client's, is what is checked. The fake takes 0.3 s per answer, so the kill lands while
calls are out: the fake has counted them (Google counts a call on arrival) but their answers
die with the process. Such a call cannot be made exactly-once by any client (Google has no
idempotency key), so the runner makes it visible instead (see llm_limits.batching.runner):

1. the resume with ``redo_lost=False`` calls nothing that Google may have answered: at the
   fake every item is answered at most once, every item the first run finished is answered
   exactly once and not again, and the items in flight at the kill are reported ``lost``
   (the ledger says their calls may have been answered; only those);
2. the resume with the default ``redo_lost=True`` then calls exactly the lost items once more:
   every item ends ``ok``, in input order, and the fake's count of each item is 1 plus its
   ``lost_calls``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llm_limits import Client, batch

from ..client.support import Conn
from .conftest import MODEL, MakeFake, add_batch_model

ROOT = Path(__file__).resolve().parents[2]
ITEMS, CONCURRENCY = 40, 4


def prompts(n: int) -> list[dict[str, str]]:
    return [{"id": f"page-{i:03d}", "prompt": f"Parse festival page {i:03d}"} for i in range(n)]


def lines(path: Path, event: str) -> list[dict[str, object]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line the kill cut short
        if record.get("event") == event:
            out.append(record)
    return out


def test_a_killed_batch_resumes_each_item_exactly_once_at_the_fake(
    keyed_db: Conn, db_url: str, make_fake: MakeFake, tmp_path: Path
) -> None:
    add_batch_model(keyed_db, 1000)
    fake = make_fake(1000, latency=0.3)
    checkpoint = tmp_path / "festival.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.batch.killed_batch", db_url, fake.base_url,
         str(checkpoint), str(ITEMS), str(CONCURRENCY)],
        cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(lines(checkpoint, "result")) < 12:
            assert proc.poll() is None, "the batch ended before the kill"
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)

    finished = {str(r["id"]) for r in lines(checkpoint, "result")}
    started = {str(r["id"]) for r in lines(checkpoint, "started")}
    in_flight = started - finished
    assert 12 <= len(finished) < ITEMS and 1 <= len(in_flight) <= CONCURRENCY, (finished, in_flight)
    items = prompts(ITEMS)
    text_of = {item["id"]: item["prompt"] for item in items}

    # 1. Resume without calling anything Google may have answered.
    with Client(db_url, base_url=fake.base_url, timeout=30.0) as client:
        careful = batch(items, model=MODEL, client=client, caller="resumed", db_url=db_url,
                        checkpoint=checkpoint, concurrency=CONCURRENCY, progress=False,
                        redo_lost=False)  # fmt: skip
    served = fake.stats().served
    assert [r.id for r in careful] == [item["id"] for item in items]
    lost = {str(r.id) for r in careful if r.status == "lost"}
    assert {r.status for r in careful} <= {"ok", "lost"}
    assert lost <= in_flight, "only a call out at the kill can be lost"
    assert all(served.get(p, 0) <= 1 for p in text_of.values()), served
    for r in careful:
        if r.ok:
            assert served[text_of[str(r.id)]] == 1, r
            assert r.text == "fake reply to: " + text_of[str(r.id)][:40]
            assert r.resumed == (str(r.id) in finished)
        else:
            assert r.lost_calls == 1 and not r.text
    # A lost call granted but not yet sent at the kill: the ledger cannot tell it from one out.
    never_sent = {i for i in lost if served.get(text_of[i], 0) == 0}
    assert sum(served.values()) == ITEMS - len(never_sent)

    # 2. Resume with the default: the lost items are called once more, nothing else is.
    with Client(db_url, base_url=fake.base_url, timeout=30.0) as client:
        final = batch(items, model=MODEL, client=client, caller="resumed", db_url=db_url,
                      checkpoint=checkpoint, concurrency=CONCURRENCY, progress=False)  # fmt: skip
    served = fake.stats().served
    assert [r.id for r in final] == [item["id"] for item in items]
    assert [r.index for r in final] == list(range(ITEMS))
    assert all(r.ok for r in final), [r for r in final if not r.ok]
    for r in final:
        expected = 1 + r.lost_calls - (str(r.id) in never_sent)
        assert served[text_of[str(r.id)]] == expected, (r, served[text_of[str(r.id)]])
        assert r.resumed == (str(r.id) not in lost)
        assert r.lost_calls == (str(r.id) in lost)
    assert sum(r.lost_calls for r in final) == len(lost)
