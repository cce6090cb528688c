"""How the CLI shows quota state and audit rows (rich renderables and plain lines)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 10
EVENT_STYLES = {
    "granted": "green",
    "refused": "yellow",
    "committed": "cyan",
    "released": "blue",
    "rate_limited": "bold red",
    "expired": "magenta",
    "config_changed": "bold",
    "key_disabled": "bold red",
    "outage_cooldown": "bold red",
    "outage_ended": "green",
}
# Bookkeeping columns that every config change touches; they say nothing to an operator.
_QUIET_COLUMNS = {"id", "created_at", "updated_at"}


def number(n: int | None) -> str:
    return "∞" if n is None else f"{n:,}"


def human_seconds(seconds: float) -> str:
    """A short duration: 850ms, 42s, 5m02s, 9h12m, 3d04h."""
    s = max(seconds, 0.0)
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def usage(used: int, limit: int | None, width: int = BAR_WIDTH) -> Text:
    """``███░░░░░░░ 3/30``, coloured by how close the limit is."""
    gap = " " if width else ""
    if limit is None:
        return Text(f"{'·' * width}{gap}{number(used)}/∞", style="dim")
    frac = 1.0 if limit <= 0 else min(used / limit, 1.0)
    full = round(frac * width)
    style = "red" if frac >= 0.9 else "yellow" if frac >= 0.7 else "green"
    text = Text("█" * full, style=style)
    text.append("░" * (width - full), style="dim")
    text.append(f"{gap}{number(used)}/{number(limit)}", style=style if not width else "")
    return text


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def storage_line(rows: Sequence[Mapping[str, Any]]) -> Text:
    """Database space of llm-limits (from public.storage_status()), biggest tables first."""
    ours = [r for r in rows if r["counted"]]
    total = sum(int(r["total_bytes"]) for r in ours)
    parts = ", ".join(
        f"{r['table_name'].removeprefix('google_ai_')} {megabytes(int(r['total_bytes']))}"
        for r in ours[:3]
    )
    line = Text.assemble(("database space", "bold"), f"  llm-limits {megabytes(total)} ({parts})")
    for r in rows:
        if not r["counted"]:
            line.append(f"  ·  {r['table_name']} {megabytes(int(r['total_bytes']))} (the bot's)")
    return line


def class_view(rows: Sequence[Mapping[str, Any]]) -> RenderableType:
    """Use and waiters per caller class and model (public.class_status()); the people waiting
    are the end users among the waiters, each once."""
    table = Table(title=Text("by caller class", style="bold"), title_justify="left")
    for col in ("class", "priority", "model", "RPM used", "TPM used", "today", "waiting",
                "people waiting", "reserves RPM/TPM/RPD", "fallback"):  # fmt: skip
        table.add_column(col, no_wrap=True)
    for r in rows:
        reserves = "/".join(f"{r[k]:.0%}" for k in ("rpm_reserve", "tpm_reserve", "rpd_reserve"))
        table.add_row(
            r["caller_class"], str(r["priority"]), r["model"] or "-", number(r["rpm_used"]),
            number(r["tpm_used"]), number(r["rpd_used"]), number(r["waiters"]),
            number(r["people_waiting"]), reserves,
            "yes" if r["may_fall_back"] else "no",
        )  # fmt: skip
    return table


def observed_limits_lines(
    rows: Sequence[Mapping[str, Any]], learn_limits: str
) -> RenderableType | None:
    """Limits Google's 429s reported that differ from the table (public.observed_limits())."""
    if not rows:
        return None
    lines = [
        Text.assemble(("limits Google reported", "bold"), f"  (learn_limits = {learn_limits})")
    ]
    for r in rows:
        what = "applied" if r["applied"] else "not applied"
        table = "no limit" if r["configured"] is None else r["configured"]
        lines.append(Text(
            f"  {r['quota_group']} · {r['model']} · {r['dimension'].upper()}: Google says "
            f"{r['observed']}, the table says {table}"
            f" ({what}; seen {r['times_seen']}x, last {local_clock(r['last_seen'])})"
        ))  # fmt: skip
    return Group(*lines)


def local_clock(ts: datetime) -> str:
    return ts.astimezone().strftime("%H:%M:%S")


def bar_width_for(console_width: int) -> int:
    """Bars as wide as the terminal allows; none at all in 80 columns."""
    return 10 if console_width >= 150 else 5 if console_width >= 120 else 0


def status_view(
    rows: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    now: datetime,
    bar_width: int = BAR_WIDTH,
) -> RenderableType:
    """One table per quota group, one row per model, from public.quota_status()."""
    window = human_seconds(settings["window_ms"] / 1000)
    guard = settings["window_guard_ms"]
    reset = rows[0]["next_rpd_reset"] if rows else None
    head = Text.assemble(
        ("llm-limits status", "bold"),
        f"  {now.astimezone():%Y-%m-%d %H:%M:%S %Z}  ·  sliding window {window}",
        f" (+{guard} ms guard)  ·  RPD resets at midnight {settings['rpd_time_zone']}",
        f" ({local_clock(reset)} here)" if reset else "",
    )
    if not rows:
        return Group(head, Text("no active keys; add one with `llm-limits keys add`"))
    tables: list[RenderableType] = [head]
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_group.setdefault(row["quota_group"], []).append(row)
    for group, models in by_group.items():
        keys = ", ".join(models[0]["key_aliases"] or [])
        table = Table(
            title=Text.assemble((group, "bold"), f"  keys: {keys}"),
            title_justify="left",
            expand=False,
        )
        table.add_column("model", no_wrap=True)
        for col in ("RPM", "TPM", "RPD"):
            table.add_column(col, no_wrap=True)
        table.add_column("cooldown")
        # Narrow terminals: the reset is in the heading line already, and headers shrink.
        compact = bar_width == 0
        if not compact:
            table.add_column("RPD reset", no_wrap=True)
        table.add_column("flight" if compact else "in flight", justify="right")
        table.add_column("wait" if compact else "waiters", justify="right")
        table.add_column("est/act" if compact else "estimate/actual", no_wrap=True)
        for r in models:
            cells: list[RenderableType] = [
                Text.assemble(r["model"], (f" {r.get('token_counter') or ''}", "dim")),
                usage(r["rpm_used"], r["rpm_limit"], bar_width),
                usage(r["tpm_used"], r["tpm_limit"], bar_width),
                usage(r["rpd_used"], r["rpd_limit"], bar_width),
                cooldown(r["cooldown_until"], r["cooldown_reason"], now),
            ]
            if not compact:
                left = (r["next_rpd_reset"] - now).total_seconds()
                cells.append(f"in {human_seconds(left)}")
            cells += [str(r["in_flight"]), str(r["waiters"]), accuracy(r, compact)]
            table.add_row(*cells)
        tables.append(table)
    return Group(*tables)


def accuracy(row: Mapping[str, Any], compact: bool) -> Text:
    """Admission estimate over Google's count for the live window: p50 and max (1.00 = exact)."""
    p50, top = row.get("estimate_ratio_p50"), row.get("estimate_ratio_max")
    if p50 is None or top is None:
        return Text("-", style="dim")
    style = "red" if float(p50) < 1 else "yellow" if float(top) > 1.5 else ""
    if compact:
        return Text(f"{p50:.2f}/{top:.2f}", style=style)
    return Text(f"p50 {p50:.2f} · max {top:.2f} (n={row['estimates_compared']})", style=style)


def cooldown(until: datetime | None, reason: str | None, now: datetime) -> Text:
    if until is None:
        return Text("-", style="dim")
    left = human_seconds((until - now).total_seconds())
    return Text(f"{reason or 'cooldown'} until {local_clock(until)} ({left})", style="red")


# -- audit --------------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if len(value) <= 40 else value[:37] + "..."
    return json.dumps(value)


def _config_change(details: Mapping[str, Any]) -> str:
    table = str(details.get("table", "?")).removeprefix("google_ai_")
    op = str(details.get("op", "?"))
    old = details.get("old") or {}
    new = details.get("new") or {}
    if op == "update":
        changes = [
            f"{col}: {_scalar(old.get(col))}→{_scalar(new.get(col))}"
            for col in new
            if col not in _QUIET_COLUMNS and old.get(col) != new.get(col)
        ]
    elif op == "insert":
        changes = [
            f"{col}={_scalar(v)}"
            for col, v in new.items()
            if col not in _QUIET_COLUMNS and v is not None
        ]
    else:
        changes = []
    return " ".join([f"{table} {op}", *changes])


# The fields an operator reads first; the rest follow alphabetically.
_DETAIL_ORDER = (
    "reason",
    "tokens",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
    "waited_ms",
    "retry_after_ms",
    "quota_id",
    "cooldown_until",
    "mode",
    "max_wait_ms",
    "caller",
)


def _detail_rank(key: str) -> tuple[int, str]:
    return (_DETAIL_ORDER.index(key) if key in _DETAIL_ORDER else len(_DETAIL_ORDER), key)


def compact_details(event: str, details: Mapping[str, Any] | None) -> str:
    """The audit row's details as short ``key=value`` pairs; config changes as a diff."""
    if not details:
        return ""
    if event == "config_changed":
        return _config_change(details)
    parts = []
    for key, value in sorted(details.items(), key=lambda kv: _detail_rank(kv[0])):
        if value is None or isinstance(value, (dict, list)):
            continue
        if key == "request_id" and isinstance(value, str):
            parts.append(f"req={value[:8]}")
        elif key.endswith("_ms") and isinstance(value, (int, float)):
            parts.append(f"{key.removesuffix('_ms')}={human_seconds(value / 1000)}")
        else:
            parts.append(f"{key}={_scalar(value)}")
    return " ".join(parts)


def short_id(rid: UUID | str | None) -> str:
    return str(rid)[:8] if rid else "-"


def audit_line(row: Mapping[str, Any], with_date: bool = False) -> Text:
    ts: datetime = row["ts"]
    stamp = ts.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f")
    event = row["event"]
    text = Text(stamp[:-3] + "  ", style="dim")
    text.append(f"{event:<14} ", style=EVENT_STYLES.get(event, ""))
    text.append(f"{row['key_alias'] or '-':<16} {row['model'] or '-':<18} ")
    text.append(f"{short_id(row['reservation_id']):<8}  ", style="dim")
    text.append(compact_details(event, row["details"]))
    return text


def audit_header(with_date: bool = False) -> Text:
    time_col = "date       time" if with_date else "time"
    width = 23 if with_date else 12
    return Text(
        f"{time_col:<{width}}  {'event':<14} {'key':<16} {'model':<18} {'res.':<8}  details",
        style="bold",
    )


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
