"""`llm-limits audit` and `llm-limits maintenance run`."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]


def grant(db: Conn) -> str:
    row = db.execute(
        "select reservation_id from public.acquire('gemma-3-27b', 42, 'NO_WAIT', 0, null, "
        "'audit-test', 'req-1')"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_audit_lists_rows_readably_and_filters(cli: Invoke, db: Conn) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    rid = grant(db)
    result = cli("audit", "--since", "10m")
    assert result.exit_code == 0, result.output
    granted = next(line for line in result.stdout.splitlines() if " granted " in line)
    assert "a1" in granted and "gemma-3-27b" in granted and rid[:8] in granted
    assert "tokens=42" in granted and "caller=audit-test" in granted
    assert "config_changed" in result.stdout

    only = cli("audit", "--event", "granted", "--limit", "5")
    assert "config_changed" not in only.stdout and rid[:8] in only.stdout
    future = cli("audit", "--since", "2999-01-01T00:00:00+00:00")
    assert "no audit rows match" in future.stdout


def test_audit_rejects_bad_input(cli: Invoke) -> None:
    for args in (("--since", "yesterday-ish"), ("--event", "granted,bogus")):
        result = cli("audit", *args)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1


def test_follow_prints_new_rows_until_ctrl_c(
    cli: Invoke, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("keys", "add", "a1", "--env-var", "A1", "--group", "proj-a")
    made: list[str] = []

    def sleep(seconds: float) -> None:
        if made:
            raise KeyboardInterrupt
        made.append(grant(db))

    monkeypatch.setattr(time, "sleep", sleep)
    result = cli("audit", "--follow", "--event", "granted")
    assert result.exit_code == 0, result.output
    assert made[0][:8] in result.stdout


def test_maintenance_run_prints_its_log_row(cli: Invoke) -> None:
    result = cli("maintenance", "run")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["operation"] == "run_maintenance"
    assert row["status"] == "ok"
