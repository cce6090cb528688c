"""`llm-limits report` shows what public.usage_report() has: a table, --json, --csv, a chart."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]


def traffic(db: Conn) -> None:
    """nb: 2 grants of gemma, one committed and one answered 429; bot: 3 rpm refusals, 1 grant."""
    db.execute("update public.google_ai_model_limits set rpm = 3 where model = 'gemma-3-27b'")
    db.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
        "values ('r1', 'R1', 'proj-r')"
    )
    for caller, rid in (("nb", "nb-1"), ("nb", "nb-2"), ("bot", "bot-1")):
        db.execute(
            "select public.acquire('gemma-3-27b', 10, caller => %s, request_id => %s)",
            (caller, rid),
        )
    for _ in range(3):
        db.execute("select public.acquire('gemma-3-27b', 10, caller => 'bot')")
    answers = {
        "nb-1": (200, {"usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3}}),
        "nb-2": (429, {"error": {"code": 429}}),
    }
    for rid, (status, body) in answers.items():
        db.execute(
            "select public.settle(r.id, %s, %s) from public.google_ai_reservations as r"
            " where r.request_id = %s",
            (status, Jsonb(body), rid),
        )


def test_report_by_caller_as_a_table_and_a_chart(cli: Invoke, db: Conn, tmp_path: Path) -> None:
    traffic(db)
    chart = tmp_path / "report.png"
    result = cli("report", "--chart", str(chart))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "usage by caller" in out
    assert "3 (rpm 3)" in out  # bot's refusals of our own, by reason
    lines = {line.split()[1]: line for line in out.splitlines() if line.strip()[:1] == "│"
             and len(line.split()) > 2}  # fmt: skip
    assert "nb" in lines and "bot" in lines and "total" in lines
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart: {chart}" in result.stderr


def test_report_as_json_and_csv(cli: Invoke, db: Conn) -> None:
    traffic(db)
    as_json = cli("report", "--json", "--no-chart", "--by", "caller")
    assert as_json.exit_code == 0, as_json.output
    rows = {r["bucket"]: r for r in json.loads(as_json.stdout)}
    assert (rows["nb"]["requests"], rows["nb"]["committed"], rows["nb"]["google_429s"]) == (2, 1, 1)
    assert (rows["nb"]["input_tokens"], rows["nb"]["output_tokens"]) == (18, 3)
    assert rows["bot"]["refusals_by_reason"] == {"rpm": 3}
    assert rows["bot"]["fallbacks"] == 0

    as_csv = cli("report", "--csv", "--no-chart", "--by", "model")
    assert as_csv.exit_code == 0, as_csv.output
    (row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert row["bucket"] == "gemma-3-27b"
    assert (row["requests"], row["refusals"], row["refused_rpm"], row["google_429s"]) == (
        "3", "3", "3", "1",
    )  # fmt: skip


def test_report_by_class_day_and_bad_input(cli: Invoke, db: Conn) -> None:
    traffic(db)
    by_class = json.loads(cli("report", "--json", "--no-chart", "--by", "class").stdout)
    assert [(r["bucket"], r["requests"]) for r in by_class] == [("default", 3)]
    by_day = json.loads(cli("report", "--json", "--no-chart", "--by", "day").stdout)
    assert len(by_day) == 1 and by_day[0]["requests"] == 3
    assert cli("report", "--by", "key").exit_code == 2
    assert cli("report", "--json", "--csv").exit_code == 2
    empty = cli("report", "--since", "2001-01-01", "--until", "2001-01-02", "--no-chart")
    assert empty.exit_code == 0 and "no usage in this period" in empty.stdout
