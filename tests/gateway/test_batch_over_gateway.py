"""llm_limits.batch over the llm-gateway: a caller token and the gateway's URL, no Google key
and no database URL in the notebook (as on Kaggle).

The calls are the official SDK's, through the gateway (Deno) to the fake; each goes out with
the batch's request id, which the ledger records under the gateway caller's name; a second run
with the same checkpoint calls nothing.
"""

from __future__ import annotations

from pathlib import Path

from llm_limits import batch
from llm_limits.local.fake_gemini import FakeGemini

from ..batch.support import ended_within, set_caller_budget
from ..client.support import Conn
from .conftest import StartGateway, ledger
from .harness import Gateway, add_caller

GEMMA = "gemma-3-27b-it"


def gateway_with_caller(start: StartGateway, db: Conn, caller: str) -> tuple[Gateway, str]:
    """A gateway, and the token of a new caller that may use GEMMA."""
    gw = start()
    token = add_caller(db, caller, [GEMMA])
    gw.secrets.append(token)
    return gw, token


def test_a_batch_runs_over_the_gateway_and_resumes(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini, tmp_path: Path
) -> None:
    gw, token = gateway_with_caller(start_gateway, keyed_db, "kaggle-festival")
    items = [(f"page-{n}", f"Festival page {n}: when and where?") for n in range(8)] + [""]
    checkpoint = tmp_path / "gateway.jsonl"

    first = batch(items, model=GEMMA, gateway=gw.url, token=token, checkpoint=checkpoint,
                  concurrency=3, progress=False)  # fmt: skip
    again = batch(items, model=GEMMA, gateway=gw.url, token=token, checkpoint=checkpoint,
                  concurrency=3, progress=False)  # fmt: skip

    assert [r.status for r in first] == ["ok"] * 8 + ["invalid"]
    assert [r.text for r in first[:8]] == [
        "fake reply to: " + prompt[:40] for _, prompt in items[:8]
    ]
    assert all(r.prompt_tokens for r in first[:8])
    assert [r.resumed for r in again[:8]] == [True] * 8
    assert fake.stats().served == {prompt: 1 for _, prompt in items[:8]}
    rows = ledger(keyed_db)
    assert {r["caller"] for r in rows} == {"kaggle-festival"}
    assert sorted(r["request_id"] for r in rows) == sorted(str(r.request_id) for r in first[:8])


def test_a_revoked_token_stops_the_run_without_failing_every_item(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw, token = gateway_with_caller(start_gateway, keyed_db, "revoked-nb")
    keyed_db.execute("select public.revoke_caller('revoked-nb')")
    results = batch([f"p{n}" for n in range(5)], model=GEMMA, gateway=gw.url, token=token,
                    concurrency=1, progress=False)  # fmt: skip
    assert {r.status for r in results} == {"not_run"}
    assert "401" in str(results[0].error)
    assert fake.stats().served == {}


def test_a_spent_caller_budget_stops_the_run_over_the_gateway(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw, token = gateway_with_caller(start_gateway, keyed_db, "budgeted-kaggle")
    set_caller_budget(keyed_db, "budgeted-kaggle", "gemma-3-27b", 2)
    prompts = [f"Budgeted page {n}" for n in range(6)]

    # The refusal says hours (the next Pacific midnight); a stopped run ends in seconds.
    results = ended_within(
        lambda: batch(prompts, model=GEMMA, gateway=gw.url, token=token, concurrency=2,
                      progress=False),
        60.0,
    )  # fmt: skip

    assert [r.status for r in results].count("ok") == 2
    stopped = [r for r in results if r.status == "not_run"]
    assert len(stopped) == 4 and all("caller_budget" in str(r.error) for r in stopped), stopped
    assert sum(fake.stats().served.values()) == 2
