"""`llm-limits status` shows what public.quota_status() has."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]


def acquire(db: Conn, tokens: int) -> Any:
    row = db.execute(
        "select granted, reservation_id from public.acquire('gemma-3-27b', %s, 'NO_WAIT', 0, "
        "null, 'test', null)",
        (tokens,),
    ).fetchone()
    assert row is not None and row[0]
    return row[1]


def test_status_renders_the_database_numbers(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    cli("keys", "add", "b1", "--env-var", "B1", "--group", "proj-b", "--priority", "500")
    for _ in range(3):
        acquire(db, 100)
    result = cli("status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    # proj-a's key has the better priority, so it takes all three.
    assert "3/30" in out and "0/30" in out
    assert "300/15,000" in out
    assert "3/14,400" in out
    assert "proj-a" in out and "proj-b" in out
    # The space llm-limits takes, its own tables apart from the bot's token_usage.
    assert "database space" in out and "llm-limits" in out and "MB" in out
    assert "token_usage" in out and "(the bot's)" in out


def test_status_shows_a_cooldown(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    rid = acquire(db, 10)
    body = {"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}]}}  # fmt: skip
    db.execute("select public.settle(%s, 429, %s)", (rid, Jsonb(body)))
    out = cli("status").stdout
    assert "GenerateRequestsPerMinutePerProjectPerModel-FreeTier until" in out


def test_status_shows_an_outage_cooldown(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    # A cooldown long enough to outlast the test on a busy machine.
    db.execute("update public.google_ai_settings set outage_cooldown_max_ms = 60000,"
               " outage_cooldown_ms = 60000")  # fmt: skip
    for _ in range(3):  # outage_after_failures: three failed answers in a row
        db.execute(
            'select * from public.settle(%s, 503, \'{"error": {"code": 503}}\'::jsonb)',
            (acquire(db, 10),),
        )
    out = cli("status").stdout
    assert "upstream_outage until" in out


def test_status_without_keys_says_so(cli: Invoke) -> None:
    result = cli("status")
    assert result.exit_code == 0
    assert "no active keys" in result.stdout


def test_watch_refreshes_until_ctrl_c(
    cli: Invoke, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    naps = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:
            acquire(db, 10)
            return
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    result = cli("status", "--watch", "--interval", "0.2")
    assert result.exit_code == 0, result.output
    assert naps == [0.2, 0.2]
    assert "1/30" in result.stdout  # the refresh after the first nap saw the grant


def test_status_shows_how_close_the_estimates_came(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    db.execute("update public.google_ai_model_limits set token_counter = 'count_tokens'")
    for estimate, actual in ((1000, 1000), (1100, 1000), (2000, 1000)):
        usage = {"usageMetadata": {"promptTokenCount": actual, "candidatesTokenCount": 5}}
        db.execute("select public.settle(%s, 200, %s)", (acquire(db, estimate), Jsonb(usage)))
    out = cli("status").stdout
    assert "count_tokens" in out
    assert "p50 1.10 · max 2.00 (n=3)" in out


@pytest.mark.parametrize(
    ("learn_limits", "table_says"),
    [("apply", "15 (applied"), ("suggest", "30 (not applied")],  # apply is the default
)
def test_status_shows_the_limits_google_reported(
    cli: Invoke, db: Conn, learn_limits: str, table_says: str
) -> None:
    """A 429 whose quotaValue differs from the table shows up, with what learn_limits did."""
    if learn_limits != "apply":
        db.execute("update public.google_ai_settings set learn_limits = %s", (learn_limits,))
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    rid = acquire(db, 100)
    body = (
        '{"error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",'
        ' "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",'
        ' "quotaValue": "15"}]}]}}'
    )
    db.execute("select * from public.settle(%s, 429, %s::jsonb)", (rid, body))
    out = cli("status").stdout
    assert "limits Google reported" in out and f"learn_limits = {learn_limits}" in out
    assert f"proj-a · gemma-3-27b · RPM: Google says 15, the table says {table_says}" in out
