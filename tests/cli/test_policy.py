"""`llm-limits classes|budgets|fallbacks`: the policy rows, audited, and status by class."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]


def test_classes_assign_budgets_and_fallbacks(cli: Invoke, db: Conn) -> None:
    assert cli("classes", "set", "interactive", "--rpm-reserve", "0.5").exit_code == 0
    assert cli("classes", "set", "vip", "--priority", "5", "--fallback").exit_code == 0
    assert cli("classes", "assign", "telegram-bot", "vip").exit_code == 0
    unknown = cli("classes", "assign", "x", "nope")
    assert unknown.exit_code == 2 and "unknown class 'nope'" in unknown.stderr
    listed = cli("classes", "list").stdout
    assert "vip" in listed and "telegram-bot" in listed and "50%" in listed

    assert cli("budgets", "set", "notebook-7", "gemma-3-27b-it", "--requests", "100").exit_code == 0
    assert "0/100" in cli("budgets", "list").stdout
    assert cli("budgets", "set", "notebook-7", "gemma-3-27b").exit_code == 2  # nothing to cap
    assert cli("budgets", "remove", "notebook-7", "gemma-3-27b").exit_code == 0
    assert cli("budgets", "remove", "notebook-7", "gemma-3-27b").exit_code == 2

    assert "gemma-3-27b -> gemma-3-12b" in cli("fallbacks", "list").stdout  # seeded
    assert cli("fallbacks", "set", "gemma-3-12b", "gemma-3-12b").exit_code == 2
    assert cli("fallbacks", "remove", "gemma-3-27b").exit_code == 0
    assert cli("fallbacks", "list").stdout.strip() == ""

    tables = {
        r[0]
        for r in db.execute(
            "select details ->> 'table' from public.google_ai_audit_log where event = 'config_changed'"
        ).fetchall()
    }
    assert {"google_ai_caller_classes", "google_ai_caller_policies", "google_ai_caller_budgets",
            "google_ai_fallbacks"} <= tables  # fmt: skip


def test_status_shows_use_and_waiters_per_class(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    cli("classes", "assign", "festival-parser", "batch")
    for _ in range(2):
        db.execute(
            "select public.acquire('gemma-3-27b', 100, 'NO_WAIT', 0, null, 'festival-parser')"
        )
    out = cli("status").stdout
    assert "by caller class" in out
    [batch] = [line for line in out.splitlines() if "batch" in line and "gemma-3-27b" in line]
    assert " 2 " in batch and "200" in batch
