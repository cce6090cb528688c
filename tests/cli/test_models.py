"""`llm-limits models`: limits change, the triggers audit it, unknown models are refused."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]


def test_set_updates_the_model_and_is_audited(cli: Invoke, db: Conn) -> None:
    result = cli("models", "set", "gemma-3-27b-it", "--rpm", "60", "--rpd", "20000")
    assert result.exit_code == 0, result.output
    row = db.execute(
        "select rpm, tpm, rpd from public.google_ai_model_limits where model = 'gemma-3-27b'"
    ).fetchone()
    assert row == (60, 15000, 20000)
    audit = db.execute(
        "select details -> 'old' ->> 'rpm', details -> 'new' ->> 'rpm', details ->> 'table' "
        "from public.google_ai_audit_log where event = 'config_changed' and model = 'gemma-3-27b' "
        "and details ->> 'op' = 'update'"
    ).fetchall()
    assert audit == [("30", "60", "google_ai_model_limits")]
    shown = cli("audit", "--event", "config_changed")
    assert "rpm: 30→60" in shown.stdout


def test_set_with_group_writes_an_override(cli: Invoke, db: Conn) -> None:
    result = cli("models", "set", "gemma-3-27b", "--rpm", "300", "--group", "paid-project")
    assert result.exit_code == 0, result.output
    rows = db.execute(
        "select quota_group, model, rpm, tpm, rpd from public.google_ai_group_limits"
    ).fetchall()
    assert rows == [("paid-project", "gemma-3-27b", 300, None, None)]
    assert db.execute(
        "select count(*) from public.google_ai_audit_log where event = 'config_changed' "
        "and details ->> 'table' = 'google_ai_group_limits'"
    ).fetchone() == (1,)
    listed = cli("models", "list")
    assert "paid-project" in listed.stdout and "inherit" in listed.stdout


def test_unknown_model_exits_2_unless_created(cli: Invoke, db: Conn) -> None:
    for args in (("--rpm", "3"), ("--rpm", "3", "--group", "g")):
        result = cli("models", "set", "gemma-9-typo", *args)
        assert result.exit_code == 2, result.output
        assert "unknown model 'gemma-9-typo'" in result.stderr
        assert "Traceback" not in result.output
    created = cli("models", "set", "new-model", "--rpm", "3", "--tpm", "100", "--rpd", "9",
                  "--create")  # fmt: skip
    assert created.exit_code == 0, created.output
    assert db.execute(
        "select api_model, rpm, tpm, rpd from public.google_ai_model_limits "
        "where model = 'new-model'"
    ).fetchone() == ("new-model", 3, 100, 9)
