"""``llm-limits report``: who used what over a period, from ``public.usage_report``.

Requests (grants), input and output tokens, refusals of our own by reason, 429s from Google,
waits p50/p95 and fallbacks, per caller, model, UTC day or caller class; as a table, ``--json``
or ``--csv``, and a PNG chart. Supabase Studio users get the same figures with
``select * from public.usage_report(now() - interval '7 days', by => 'model')``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries, render
from llm_limits.cli.audit import parse_since
from llm_limits.cli.common import DbUrl, database, fail, stderr, stdout

COLUMNS = (
    "bucket", "requests", "committed", "input_tokens", "output_tokens", "refusals",
    "google_429s", "wait_p50_ms", "wait_p95_ms", "fallbacks", "rolled_up_requests",
)  # fmt: skip


class By(str, Enum):
    caller = "caller"
    model = "model"
    day = "day"
    class_ = "class"
    end_user = "end_user"


def reasons_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({reason for r in rows for reason in (r["refusals_by_reason"] or {})})


def flat(row: Mapping[str, Any], reasons: Sequence[str]) -> dict[str, Any]:
    """A row with one ``refused_<reason>`` column per reason (for CSV)."""
    out = {c: row[c] for c in COLUMNS}
    by_reason = row["refusals_by_reason"] or {}
    out.update({f"refused_{reason}": int(by_reason.get(reason, 0)) for reason in reasons})
    return out


def refusal_text(row: Mapping[str, Any]) -> str:
    by_reason = row["refusals_by_reason"] or {}
    if not by_reason:
        return render.number(row["refusals"])
    parts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(by_reason.items()))
    return f"{row['refusals']:,} ({parts})"


def top_rows(rows: Sequence[Mapping[str, Any]], top: int | None) -> list[Mapping[str, Any]]:
    """The ``top`` rows with the most requests (then refusals), most first; all rows as they
    came without ``top``."""
    if top is None:
        return list(rows)
    ranked = sorted(rows, key=lambda r: (-int(r["requests"] or 0), -int(r["refusals"] or 0)))
    return ranked[:top]


def wait_text(ms: int | None) -> str:
    return "-" if ms is None else render.human_seconds(ms / 1000)


def table(rows: Sequence[Mapping[str, Any]], by: str, since: datetime, until: datetime) -> Table:
    title = f"usage by {by}, {since:%Y-%m-%d %H:%M} – {until:%Y-%m-%d %H:%M} UTC"
    out = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (
        (by, "left"), ("requests", "right"), ("committed", "right"), ("input tok", "right"),
        ("output tok", "right"), ("refusals (ours)", "left"), ("429s (Google)", "right"),
        ("wait p50", "right"), ("wait p95", "right"), ("fallbacks", "right"),
    ):  # fmt: skip
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        out.add_row(
            str(r["bucket"]),
            render.number(r["requests"]),
            render.number(r["committed"]),
            render.number(r["input_tokens"]),
            render.number(r["output_tokens"]),
            refusal_text(r),
            Text(render.number(r["google_429s"]), style="bold red" if r["google_429s"] else ""),
            wait_text(r["wait_p50_ms"]),
            wait_text(r["wait_p95_ms"]),
            render.number(r["fallbacks"]),
        )
    if len(rows) > 1:
        totals = {c: sum(int(r[c] or 0) for r in rows) for c in COLUMNS[1:7]}
        out.add_row(
            Text("total", style="bold"), *(render.number(totals[c]) for c in COLUMNS[1:6]),
            render.number(totals["google_429s"]), "", "", render.number(
                sum(int(r["fallbacks"] or 0) for r in rows)),
        )  # fmt: skip
    return out


def report(
    since: Annotated[
        str, typer.Option(help="Start of the period: 7d, 12h, 30m ago, or an ISO timestamp.")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End of the period (default now), as --since.")
    ] = None,
    by: Annotated[
        By, typer.Option(help="One row per caller, model, UTC day, class or end user.")
    ] = By.caller,
    top: Annotated[
        int | None,
        typer.Option(min=1, help="Only the N rows with the most requests (end_user: 20)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
    chart: Annotated[Path, typer.Option(help="Where to write the PNG chart.")] = Path(
        ".llm-limits/report.png"
    ),
    no_chart: Annotated[bool, typer.Option("--no-chart", help="Write no chart.")] = False,
    db_url: DbUrl = None,
) -> None:
    """Requests, tokens, refusals by reason, 429s, waits and fallbacks over a period.

    Caller and class figures older than the ledger's retention (7 days by default) come from
    day roll-ups that keep no caller: they show as '(rolled up)'. Every caller is in class
    'default' until caller classes exist. By end_user, a person is the first 8 hex digits of
    the keyed hash of their id (`llm-limits end-users list`), the top 20 by requests unless
    --top says otherwise.
    """
    if as_json and as_csv:
        fail("give --json or --csv, not both")
    now = render.utc_now()
    since_ts = parse_since(since, now)
    until_ts = parse_since(until, now) if until else now
    with database(db_url) as conn:
        every = conn.execute(
            queries.USAGE_REPORT, {"since": since_ts, "until": until_ts, "by": by.value}
        ).fetchall()
    rows = top_rows(every, top if top is not None or by is not By.end_user else 20)
    chart_path = None
    if not no_chart and rows:
        from llm_limits.cli.report_chart import write_report_chart

        chart_path = write_report_chart(
            chart, rows, title=f"llm-limits usage by {by.value} since {since_ts:%Y-%m-%d %H:%M}"
        )
    if as_json:
        json.dump([dict(r) for r in rows], sys.stdout, default=str, indent=2)
        sys.stdout.write("\n")
    elif as_csv:
        reasons = reasons_of(rows)
        fields = [*COLUMNS, *(f"refused_{reason}" for reason in reasons)]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat(r, reasons) for r in rows)
    else:
        out = stdout()
        if not rows:
            out.print(Text("no usage in this period", style="dim"))
        else:
            out.print(table(rows, by.value, since_ts, until_ts))
            if any(r["rolled_up_requests"] for r in rows):
                note = "(rolled up): days whose per-call detail maintenance has rolled up; "
                out.print(Text(note + "they keep counts and input tokens only", style="dim"))
    if chart_path is not None:
        stderr().print(f"chart: {chart_path}")
