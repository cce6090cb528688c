"""Helpers shared by the database suites (security, maintenance, bad input,
properties, migrations): fixtures' setup rows, the steered clock, SQLSTATE
capture and a text snapshot of every table of ours."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[tuple[Any, ...]]

OUR_SCHEMAS = ("public", "google_ai_internal")
RPCS = (
    "acquire",
    "settle",
    "disable_key",
    "run_maintenance",
    "quota_status",
    "token_counter",
)


def add_model(
    conn: Conn,
    model: str,
    rpm: int | None,
    tpm: int | None,
    rpd: int | None,
    api: str | None = None,
) -> None:
    conn.execute(
        "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
        "values (%s, %s, %s, %s, %s)",
        (model, api or model, rpm, tpm, rpd),
    )


def add_key(conn: Conn, alias: str, group: str | None = None, priority: int = 100) -> None:
    conn.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group, priority) "
        "values (%s, %s, %s, %s)",
        (alias, alias.upper().replace("-", "_"), group, priority),
    )


def steerable_clock(conn: Conn) -> None:
    """Turn on the owner-only switch that lets `llm_limits.now` steer the clock (test databases)."""
    conn.execute(
        "update google_ai_internal.clock_switch set steerable = true where id and not steerable"
    )


def set_now(conn: Conn, instant: object) -> None:
    """Steer google_ai_internal.clock() for this session (`set llm_limits.now`)."""
    steerable_clock(conn)
    conn.execute("select set_config('llm_limits.now', %s, false)", (str(instant),))


def acquire(conn: Conn, model: str, tokens: int, **kw: object) -> tuple[Any, ...]:
    """(granted, reservation_id, key_alias, reason, retry_after_ms) of one acquire as a caller
    makes it: while the answer is 'queued', sleep retry_after_ms and call again with the
    ticket it returned. (Schemas before the ticket have no such answer: one call.)"""
    ticket = None
    while True:
        cur = conn.execute(
            "select * from public.acquire(model => %s::text, tokens => %s::int, mode => %s::text, "
            "max_wait_ms => %s::int, key_aliases => %s::text[], caller => %s::text, "
            "request_id => %s::text" + (", ticket => %s::uuid)" if ticket else ")"),
            (
                model,
                tokens,
                kw.get("mode", "NO_WAIT"),
                kw.get("max_wait_ms", 0),
                kw.get("key_aliases"),
                kw.get("caller", "tests"),
                kw.get("request_id"),
                *([ticket] if ticket else []),
            ),
        )
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        answer = dict(zip((d.name for d in cur.description), row, strict=True))
        if answer["reason"] != "queued":
            break
        ticket = answer["ticket"]
        time.sleep(answer["retry_after_ms"] / 1000)
    return tuple(
        answer[k] for k in ("granted", "reservation_id", "key_alias", "reason", "retry_after_ms")
    )


def settle(
    conn: Conn,
    reservation_id: object,
    http_status: int | None = None,
    response: object = None,
    transport_error: str | None = None,
) -> str:
    """settle's action for one outcome of a call, handed over as a carrier does: Google's
    status and JSON body, or how the exchange failed (`not_sent` refunds the grant;
    `cancelled` keeps it counted without counting towards an outage, as `timeout` does)."""
    row = conn.execute(
        "select action from public.settle(reservation_id => %s::uuid, http_status => %s::int,"
        " response => %s::jsonb, transport_error => %s::text)",
        (
            reservation_id,
            http_status,
            None if response is None else Jsonb(response),
            transport_error,
        ),
    ).fetchone()
    assert row is not None
    return str(row[0])


def commit(
    conn: Conn, reservation_id: object, prompt_tokens: int, completion_tokens: int = 0
) -> str:
    """Settle a grant with Google's 200 and its usageMetadata (action `commit`)."""
    usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": completion_tokens}
    return settle(conn, reservation_id, 200, {"usageMetadata": usage})


def too_many(retry_delay: str | None = None, quota_id: str | None = None) -> dict[str, object]:
    """A 429 body as Google sends it: a QuotaFailure violation with `quota_id` and a RetryInfo
    `retry_delay` ("21s"), each left out when None."""
    details: list[dict[str, object]] = []
    if quota_id is not None:
        details.append({"@type": QUOTA_FAILURE, "violations": [{"quotaId": quota_id}]})
    if retry_delay is not None:
        details.append({"@type": RETRY_INFO, "retryDelay": retry_delay})
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": details}}


QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def sqlstate_of(call: Callable[[], object]) -> str | None:
    """The SQLSTATE `call` raised, or None when it returned."""
    try:
        call()
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def our_tables(conn: Conn) -> list[str]:
    """Every table of ours, schema-qualified and quoted, in a stable order."""
    rows = conn.execute(
        "select format('%%I.%%I', n.nspname, c.relname) "
        "from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
        "where n.nspname = any(%s) and c.relkind in ('r', 'p') "
        "  and not exists (select from pg_depend as d "
        "                  where d.classid = 'pg_class'::regclass and d.objid = c.oid "
        "                    and d.deptype = 'e') "
        "order by 1",
        (list(OUR_SCHEMAS),),
    ).fetchall()
    return [str(r[0]) for r in rows]


def snapshot(
    conn: Conn, skip: tuple[str, ...] = ("public.google_ai_audit_log",)
) -> dict[str, list[str]]:
    """All rows of all our tables (but `skip`) as sorted text: equal snapshots, equal data."""
    return {
        table: [str(r[0]) for r in conn.execute(f"select t::text from {table} as t order by 1")]
        for table in our_tables(conn)
        if table not in skip
    }


def until(
    done: Callable[[], bool],
    what: Callable[[], str],
    caller: threading.Thread | None = None,
    timeout: float = 30.0,
) -> None:
    """Poll ``done`` every 10 ms. Fails with ``what()`` after ``timeout`` s, or as soon as
    ``caller`` (the thread whose progress is awaited) has ended without it: never a hang."""
    deadline = time.monotonic() + timeout
    while not done():
        assert caller is None or caller.is_alive(), f"{what()}: the caller ended first"
        assert time.monotonic() < deadline, f"{what()}: not within {timeout:.0f} s"
        time.sleep(0.01)
