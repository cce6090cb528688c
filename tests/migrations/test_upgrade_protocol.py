"""Upgrading a live database to the protocol owned by the database (migrations from
20261205000100: settle, always-ticketed acquire, pool_keys), with callers in the middle of
their calls.

The database is built from the migrations before it with the real `supabase db push` and
filled as the released clients leave it: settled calls, an open grant (its answer still on
the way from Google), and two live waiters holding tickets of their own making in the queue of
a full window. Then the full set is pushed. Afterwards every row is still there, the catalog
equals the schema files', pgTAP passes on a clone, and the callers finish their calls on the
new protocol: the open grant settles through `settle`, the waiters keep their places in line
(the first one's place is ahead of a newcomer's, whose ticket acquire makes) and each ends
with the wait its own call allows: their tickets, made before deadlines were stored, get one a
day away (20261206003000), the longest wait acquire accepts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from llm_limits.local import localstack
from tests.conftest import create_database, drop_database
from tests.migrations.conftest import assert_same_catalog
from tests.migrations.test_upgrade import (
    REPO,
    Rows,
    all_rows,
    assert_every_row_kept,
    migrations_before,
    push,
    run_pgtap_on_a_clone,
)
from tests.support import Conn, acquire, add_key, add_model

PROTOCOL = "20261205000100"
FIRST, SECOND = uuid.UUID(int=1), uuid.UUID(int=2)


def wait(
    conn: Conn,
    caller: str,
    max_wait_ms: int,
    ticket: uuid.UUID | None,
    model: str = "pr-model",
    key: str = "pr-a",
) -> dict[str, Any]:
    """One WAIT call of acquire for 10 tokens on `model` with `key`, as a dict."""
    cur = conn.execute(
        "select * from public.acquire(model => %s, tokens => 10, mode => 'WAIT',"
        " max_wait_ms => %s, key_aliases => array[%s], caller => %s, ticket => %s)",
        (model, max_wait_ms, key, caller, ticket),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip([c.name for c in cur.description or []], row, strict=True))


def fill(conn: Conn) -> dict[str, object]:
    """A bot's traffic under the released protocol, stopped mid-call."""
    add_model(conn, "pr-model", rpm=3, tpm=50_000, rpd=1000, api="pr-model-it")
    add_key(conn, "pr-a", group="pr-project")
    done = acquire(conn, "pr-model", 300, caller="festival-bot")
    conn.execute("select public.commit_usage(%s, 250, 40)", (done[1],))
    refunded = acquire(conn, "pr-model", 300, caller="festival-bot")
    conn.execute("select public.release(%s, 'never sent', false)", (refunded[1],))
    open_grant = acquire(conn, "pr-model", 500, caller="festival-bot")
    full = acquire(conn, "pr-model", 10, caller="filler")
    assert open_grant[0] and full[0]
    # Two released clients wait in line with tickets of their own making. Their places
    # outlive the push, which takes longer than a caller may be late by default.
    conn.execute("update public.google_ai_settings set wait_ticket_grace_ms = 60000")
    for caller, ticket in (("waiter-1", FIRST), ("waiter-2", SECOND)):
        assert wait(conn, caller, 30_000, ticket)["reason"] == "queued"
    return {"open": open_grant[1]}


@pytest.fixture
def upgraded(tmp_path: Path) -> Iterator[tuple[str, Rows, dict[str, object]]]:
    url = create_database(template=None, prefix="upgrade17")
    try:
        localstack.bootstrap(url)
        first = push(url, migrations_before(tmp_path, PROTOCOL))
        assert PROTOCOL not in first
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            ids = fill(conn)
            before = all_rows(conn)
        push(url, REPO)
        yield url, before, ids
    finally:
        drop_database(url)


def test_callers_mid_call_finish_on_the_new_protocol(
    upgraded: tuple[str, Rows, dict[str, object]], schema_files_url: str, tmp_path: Path
) -> None:
    url, before, ids = upgraded
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        assert_every_row_kept(before, all_rows(conn))
        tickets = conn.execute(
            "select id, deadline - clock_timestamp() > interval '23 hours'"
            " from google_ai_internal.wait_tickets order by seq"
        ).fetchall()
        assert tickets == [(FIRST, True), (SECOND, True)], "the waiters keep their places"
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        # The answer of the call in flight arrives: the new client settles it.
        usage = {"usageMetadata": {"promptTokenCount": 420, "candidatesTokenCount": 30}}
        verdict = conn.execute(
            "select action, retry from public.settle(%s, 200, %s)", (ids["open"], Jsonb(usage))
        ).fetchone()
        assert verdict == ("commit", False)
        row = conn.execute(
            "select status, counted_tokens from public.google_ai_reservations where id = %s",
            (ids["open"],),
        ).fetchone()
        assert row == ("committed", 420)

        # A newcomer without a ticket gets one, behind the two waiters.
        newcomer = wait(conn, "newcomer", 30_000, None)
        assert newcomer["reason"] == "queued" and newcomer["ticket"] not in (FIRST, SECOND)
        order = conn.execute(
            "select id from google_ai_internal.wait_tickets order by seq"
        ).fetchall()
        assert [r[0] for r in order] == [FIRST, SECOND, newcomer["ticket"]]

        # A waiter whose ticket got its deadline from the upgrade ends with its own call's
        # wait: the window is full for a minute, so 300 ms ends in wait_timeout with a
        # truthful time.
        started = time.monotonic()
        answer = wait(conn, "waiter-1", 300, FIRST)
        while answer["reason"] == "queued":
            time.sleep(answer["retry_after_ms"] / 1000)
            answer = wait(conn, "waiter-1", 300, FIRST)
        assert (answer["granted"], answer["reason"]) == (False, "wait_timeout")
        assert answer["retry_after_ms"] > 30_000
        assert time.monotonic() - started < 5
        [refused] = conn.execute(
            "select details from public.google_ai_audit_log"
            " where event = 'refused' and details ->> 'caller' = 'waiter-1'"
        ).fetchall()
        assert refused[0]["reason"] == "wait_timeout"
        conn.execute("update public.google_ai_settings set wait_ticket_grace_ms = 1000")

    assert_same_catalog(url, "the upgraded database", schema_files_url, tmp_path / "catalogs")
    run_pgtap_on_a_clone(url)
