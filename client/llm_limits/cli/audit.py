"""``llm-limits audit`` (the audit log, --follow) and ``llm-limits maintenance run``."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.text import Text

from llm_limits.cli import queries, render
from llm_limits.cli.common import (
    DbUrl,
    database,
    fail,
    stdout,
)
from llm_limits.cli.connect import Conn

maintenance_app = typer.Typer(help="Leases, ledger rollup, audit trimming.")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime) -> datetime:
    """``10m``, ``1h``, ``2d`` ago, or an ISO timestamp (local time when it has no zone)."""
    match = _DURATION.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--since expects 10m, 1h, 2d or an ISO timestamp, got {value!r}")
    return ts.astimezone() if ts.tzinfo is None else ts


def parse_events(conn: Conn, given: list[str] | None) -> list[str] | None:
    if not given:
        return None
    events = [e.strip() for item in given for e in item.split(",") if e.strip()]
    kinds = [r["kind"] for r in conn.execute(queries.AUDIT_EVENT_KINDS).fetchall()]
    unknown = [e for e in events if e not in kinds]
    if unknown:
        fail(f"unknown event {unknown[0]!r}; one of {', '.join(kinds)}")
    return events


def audit(
    since: Annotated[
        str | None, typer.Option(help="Only rows since: 10m, 1h, 2d or an ISO timestamp.")
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="Only these events (repeatable).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new rows.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    interval: Annotated[float, typer.Option(min=0.1, help="Poll interval with --follow.")] = 1.0,
    db_url: DbUrl = None,
) -> None:
    """Recent audit rows: time, event, key, model, reservation, details."""
    since_ts = parse_since(since, render.utc_now()) if since else None
    out = stdout()
    with_date = since_ts is None or render.utc_now() - since_ts > timedelta(hours=20)
    with database(db_url) as conn:
        events = parse_events(conn, event)
        page = conn.execute(
            queries.AUDIT_PAGE, {"since": since_ts, "events": events, "limit": limit}
        ).fetchall()
        page.reverse()
        out.print(render.audit_header(with_date))
        for row in page:
            out.print(render.audit_line(row, with_date), soft_wrap=True)
        if not follow:
            if not page:
                out.print(Text("no audit rows match", style="dim"))
            return
        seen = {row["id"]: row["ts"] for row in page}
        horizon = page[-1]["ts"] if page else since_ts or render.utc_now()
        try:
            while True:
                time.sleep(interval)
                # Rows become visible at commit, not in id order: re-read a short overlap.
                overlap = horizon - timedelta(seconds=30)
                rows = conn.execute(
                    queries.AUDIT_SINCE, {"since": overlap, "events": events}
                ).fetchall()
                for row in rows:
                    if row["id"] in seen:
                        continue
                    seen[row["id"]] = row["ts"]
                    out.print(render.audit_line(row, with_date), soft_wrap=True)
                    horizon = max(horizon, row["ts"])
                seen = {i: ts for i, ts in seen.items() if ts >= overlap}
        except KeyboardInterrupt:
            pass


@maintenance_app.command("run")
def maintenance_run(db_url: DbUrl = None) -> None:
    """One maintenance pass (public.run_maintenance); prints its log row."""
    with database(db_url) as conn:
        row = conn.execute(queries.RUN_MAINTENANCE).fetchone()
    log_row = row["log_row"] if row else None
    stdout().print_json(json.dumps(log_row, default=str))
