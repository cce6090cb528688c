"""`llm-limits end-users`, `report --by end_user` and the people waiting in `status`: the
operator names a person by the raw id, the database keeps and shows only its hash's label."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]


def label(db: Conn, person: str) -> str:
    row = db.execute("select public.end_user_label(%s::text)", (person,)).fetchone()
    assert row is not None
    return str(row[0])


def acquire(db: Conn, person: str | None, mode: str = "NO_WAIT", wait_ms: int = 0) -> None:
    db.execute(
        "select public.acquire('gemma-3-27b', 100, %s, %s, null, 'telegram-bot', null, null, %s)",
        (mode, wait_ms, person),
    )


def test_limit_block_unblock_and_list(cli: Invoke, db: Conn) -> None:
    tg1, tg2 = label(db, "tg:1"), label(db, "tg:2")
    limited = cli("end-users", "limit", "tg:1", "--rpm", "20", "--notes", "a regular")
    assert limited.exit_code == 0 and tg1 in limited.stdout and "rpm=20" in limited.stdout
    assert cli("end-users", "block", "tg:2", "--notes", "spam").stdout.strip() == (
        f"end user {tg2} blocked"
    )
    assert "already blocked" in cli("end-users", "block", "tg:2").stdout
    listed = cli("end-users", "list").stdout
    [blocked_line, regular_line] = [
        line for line in listed.splitlines() if tg1 in line or tg2 in line
    ]
    assert tg2 in blocked_line and "yes" in blocked_line and "spam" in blocked_line
    assert "20" in regular_line and "class" in regular_line and "a regular" in regular_line
    assert "tg:1" not in listed and "tg:2" not in listed  # the raw ids are nowhere

    assert cli("end-users", "unblock", "tg:2").exit_code == 0
    again = cli("end-users", "unblock", "tg:2")
    assert again.exit_code == 2 and "is not blocked" in again.stderr
    assert cli("end-users", "limit", "tg:1", "--reset").exit_code == 0
    assert cli("end-users", "limit", "tg:1").exit_code == 2  # nothing to set
    bad = cli("end-users", "block", "")
    assert bad.exit_code == 2 and "LL007" in bad.stderr
    changes = db.execute(
        "select count(*) from public.google_ai_audit_log where event = 'config_changed'"
        " and details ->> 'table' = 'google_ai_end_users'"
    ).fetchone()
    assert changes == (5,)  # limit, block, unblock, reset; the second block changed nothing


def test_report_by_end_user_and_people_waiting(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    cli("classes", "assign", "telegram-bot", "interactive")
    db.execute("update public.google_ai_model_limits set rpm = 8 where model = 'gemma-3-27b'")
    for _ in range(7):  # six grants and one end_user_limit refusal
        acquire(db, "tg:busy")
    acquire(db, "tg:quiet")
    acquire(db, None)
    acquire(db, "tg:quiet", "WAIT", 60_000)  # the window (8) is full now: in line
    acquire(db, "tg:late", "WAIT", 60_000)
    acquire(db, "tg:late", "WAIT", 60_000)

    out = cli("report", "--by", "end_user", "--no-chart", "--json")
    assert out.exit_code == 0, out.stderr
    rows = {r["bucket"]: r for r in json.loads(out.stdout)}
    busy = rows[label(db, "tg:busy")]
    assert (busy["requests"], busy["refusals_by_reason"]) == (6, {"end_user_limit": 1})
    assert rows[label(db, "tg:quiet")]["requests"] == 1
    assert rows["(no end user)"]["requests"] == 1
    assert list(rows)[0] == label(db, "tg:busy")  # most requests first
    top = json.loads(cli("report", "--by", "end_user", "--top", "1", "--no-chart", "--json").stdout)
    assert [r["bucket"] for r in top] == [label(db, "tg:busy")]
    assert label(db, "tg:busy") in cli("report", "--by", "end_user", "--no-chart").stdout

    status = cli("status").stdout
    [line] = [s for s in status.splitlines() if "interactive" in s and "gemma-3-27b" in s]
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells[6:8] == ["3", "2"]  # waiting: 3 tickets, 2 people
