"""Bad input, failed calls and a spent day: each item gets its outcome in its place, nothing is
raised, nothing is lost, and the next run does only what is left.

* bad input (an empty prompt, a non-string, a duplicate id, an unknown shape, a bad id) is
  ``invalid`` with a clear message and never reaches the fake; the valid items around it run;
* a call that fails (the fake answers 500 to every attempt) is ``failed`` with the error, the
  run goes on, and the next run calls it again;
* the day's quota running out stops the run: the rest are ``not_run``, not checkpointed;
* ``abatch`` returns the same results as ``batch``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_limits import Client, abatch, batch

from ..client.support import Conn, hold
from .conftest import MODEL, MakeFake, add_batch_model

BAD_AND_GOOD: list[object] = [
    "first good prompt",
    "",
    "   \n",
    None,
    42,
    {"id": "a", "prompt": "item a"},
    {"id": "a", "prompt": "another item a"},
    ("b", "item b"),
    ("c", ""),
    ("d", b"bytes are not text"),
    {"id": 1.5, "prompt": "a float id"},
    {"id": True, "prompt": "a bool id"},
    {"id": "no-prompt"},
    ("too", "many", "parts"),
    "first good prompt",
    {"prompt": "a dict without id"},
]
EXPECTED = [
    ("ok", None),
    ("invalid", "empty prompt"),
    ("invalid", "empty prompt"),
    ("invalid", "an item is a prompt (str), a dict with 'prompt' (and 'id'), or an (id, prompt) "
                "pair; got NoneType"),
    ("invalid", "an item is a prompt (str), a dict with 'prompt' (and 'id'), or an (id, prompt) "
                "pair; got int"),
    ("ok", None),
    ("invalid", "duplicate id 'a': item 5 has it"),
    ("ok", None),
    ("invalid", "empty prompt"),
    ("invalid", "prompt must be a str, got bytes"),
    ("invalid", "id must be a str or an int, got float"),
    ("invalid", "id must be a str or an int, got bool"),
    ("invalid", "a dict item needs a 'prompt' key"),
    ("invalid", "an item is a prompt (str), a dict with 'prompt' (and 'id'), or an (id, prompt) "
                "pair; got tuple"),
    ("ok", None),
    ("ok", None),
]  # fmt: skip


def test_bad_input_gets_a_clear_per_item_error_and_nothing_is_lost(
    keyed_db: Conn, db_url: str, make_fake: MakeFake, tmp_path: Path
) -> None:
    add_batch_model(keyed_db, 100)
    fake = make_fake(100)
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        results = batch(BAD_AND_GOOD, model=MODEL, client=client, db_url=db_url,
                        checkpoint=tmp_path / "bad.jsonl", progress=False)  # fmt: skip

    assert [(r.status, r.error) for r in results] == EXPECTED
    assert [r.index for r in results] == list(range(len(BAD_AND_GOOD)))
    # The same prompt twice is two items: the derived id of the second says it is a repeat.
    first, repeat = results[0].id, results[14].id
    assert isinstance(first, str) and first.startswith("p:") and repeat == f"{first}#2"
    assert (results[5].id, results[7].id, results[6].id, results[8].id) == ("a", "b", "a", "c")
    # Only the valid prompts reached the fake, each once (the repeated one twice).
    assert fake.stats().served == {
        "first good prompt": 2, "item a": 1, "item b": 1, "a dict without id": 1,
    }  # fmt: skip


def test_a_failed_item_is_recorded_the_run_goes_on_and_the_next_run_retries_it(
    keyed_db: Conn, db_url: str, make_fake: MakeFake, tmp_path: Path
) -> None:
    add_batch_model(keyed_db, 100)
    fake = make_fake(100)
    checkpoint = tmp_path / "failing.jsonl"
    items = [(f"i{n}", f"prompt {n}") for n in range(6)]
    with Client(db_url, base_url=fake.base_url, timeout=10.0, max_attempts=3) as c:
        fake.inject(500, count=3)  # every attempt of the first call made
        first = batch(items, model=MODEL, client=c, db_url=db_url, checkpoint=checkpoint,
                      concurrency=1, progress=False)  # fmt: skip
        second = batch(items, model=MODEL, client=c, db_url=db_url, checkpoint=checkpoint,
                       concurrency=1, progress=False)  # fmt: skip

    assert [r.status for r in first] == ["failed"] + ["ok"] * 5
    assert first[0].error is not None and first[0].error.startswith("ServerError 500:")
    assert [r.status for r in second] == ["ok"] * 6
    assert [r.resumed for r in second] == [False] + [True] * 5
    assert fake.stats().served == {f"prompt {n}": 1 for n in range(6)}


def test_a_spent_day_stops_the_run_and_leaves_the_rest_for_the_next(
    keyed_db: Conn,
    db_url: str,
    make_fake: MakeFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_batch_model(keyed_db, 100, rpd=3)
    fake = make_fake(100)
    checkpoint = tmp_path / "day.jsonl"
    items = [f"day prompt {n}" for n in range(8)]
    hold(monkeypatch, "b1")  # one key: one group's RPD of 3 is the whole pool
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        results = batch(items, model=MODEL, client=client, db_url=db_url, checkpoint=checkpoint,
                        concurrency=1, progress=False)  # fmt: skip

    assert [r.status for r in results] == ["ok"] * 3 + ["not_run"] * 5
    assert all("rpd" in str(r.error) for r in results[3:])
    assert sum(fake.stats().served.values()) == 3
    written = [line for line in checkpoint.read_text().splitlines() if '"result"' in line]
    assert len(written) == 3, "a not_run item is left for the next run"


async def test_abatch_returns_what_batch_returns(
    keyed_db: Conn, db_url: str, make_fake: MakeFake
) -> None:
    add_batch_model(keyed_db, 100)
    fake = make_fake(100)
    items = [{"id": n, "prompt": f"async prompt {n}"} for n in range(12)] + ["", 7]
    async with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        results = await abatch(items, model=MODEL, client=client, db_url=db_url, concurrency=4,
                               progress=False)  # fmt: skip
    assert [r.id for r in results[:12]] == list(range(12))
    assert [r.status for r in results] == ["ok"] * 12 + ["invalid", "invalid"]
    assert [r.text for r in results[:12]] == [f"fake reply to: async prompt {n}" for n in range(12)]
    assert fake.stats().served == {f"async prompt {n}": 1 for n in range(12)}
