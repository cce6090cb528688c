"""A caller's daily budget stops a batch, through PgBouncer: the items the budget paid for are
``ok``, the rest ``not_run`` at once (acquire refuses ``caller_budget`` until the next Pacific
midnight; no worker sleeps until then), and the next run with the checkpoint does only the rest.

The run goes in a thread joined with a bound far below the refusal's retry time (hours): a run
that slept on the refusal would still be alive at the bound.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llm_limits import BatchResult, Client, abatch, batch

from ..client.support import Conn
from ..conftest import pooled
from .conftest import MODEL, MakeFake, add_batch_model
from .support import ended_within, set_caller_budget

CALLER, BUDGET, ITEMS, CONCURRENCY = "budgeted-notebook", 4, 10, 3
BOUND_S = 60.0  # the refusal says hours; a stopped run ends in about a second


def spend_budget_then_resume(
    db: Conn, url: str, base_url: str, checkpoint: Path, run_async: bool
) -> tuple[list[BatchResult], list[BatchResult]]:
    """The first run under a budget of BUDGET requests, then a second run with a larger one."""
    set_caller_budget(db, CALLER, MODEL, BUDGET)
    items = [(f"row-{n}", f"Budgeted prompt {n}") for n in range(ITEMS)]

    def run() -> list[BatchResult]:
        with Client(url, base_url=base_url, timeout=10.0) as client:
            kwargs: dict[str, Any] = {
                "model": MODEL, "client": client, "caller": CALLER, "db_url": url,
                "checkpoint": checkpoint, "concurrency": CONCURRENCY, "progress": False,
            }  # fmt: skip
            if run_async:
                return asyncio.run(abatch(items, **kwargs))
            return batch(items, **kwargs)

    first = ended_within(run, BOUND_S)
    set_caller_budget(db, CALLER, MODEL, 100)
    return first, ended_within(run, BOUND_S)


@pytest.mark.parametrize("run_async", [False, True], ids=["batch", "abatch"])
def test_a_spent_caller_budget_stops_the_run_and_the_next_run_does_the_rest(
    keyed_db: Conn, db_url: str, make_fake: MakeFake, tmp_path: Path, run_async: bool
) -> None:
    add_batch_model(keyed_db, 100)
    fake = make_fake(100)
    checkpoint = tmp_path / "budget.jsonl"
    first, second = spend_budget_then_resume(
        keyed_db, pooled(db_url), fake.base_url, checkpoint, run_async
    )

    assert [r.status for r in first].count("ok") == BUDGET
    stopped = [r for r in first if r.status == "not_run"]
    assert len(stopped) == ITEMS - BUDGET
    assert all("caller_budget" in str(r.error) for r in stopped), stopped
    refusals = keyed_db.execute(
        "select coalesce(sum(refusals), 0) from public.google_ai_refusals"
        " where caller = %s and reason = 'caller_budget'",
        (CALLER,),
    ).fetchone()
    assert refusals is not None and 1 <= refusals[0] <= CONCURRENCY  # one per worker at most

    assert [r.status for r in second] == ["ok"] * ITEMS
    assert sorted(r.index for r in second if r.resumed) == sorted(r.index for r in first if r.ok), (
        "what the budget paid for is read back, not called again"
    )
    assert fake.stats().served == {f"Budgeted prompt {n}": 1 for n in range(ITEMS)}
