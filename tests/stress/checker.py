"""An independent checker of llm-limits' promises, from the ledger and the
audit log alone.

It deliberately shares no code (and no SQL) with the implementation: it reads
raw rows and re-derives every sliding window in Python. What it checks:

* for every (quota group, model) and every sliding window ending at a grant,
  requests <= RPM and input tokens <= TPM, counting committed actuals and
  open estimates (released-unsent rows never reached Google and count 0).
  Tokens a caller committed *above* its own estimate are usage the limiter
  could not know about when it granted; an excess over TPM is accepted only
  when such overage in that window explains it;
* per quota day (America/Los_Angeles), requests <= RPD;
* every reservation has exactly one terminal state, and its audit trail has
  exactly one `granted` row and at most one settling row;
* every grant and every refusal is audited.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg


@dataclass(frozen=True)
class Row:
    id: str
    group: str
    model: str
    granted_at: datetime
    status: str
    estimated: int
    actual: int | None
    counted_requests: int
    counted_tokens: int


@dataclass
class Report:
    grants: int = 0
    refusals: int = 0
    max_requests: dict[tuple[str, str], int] = field(default_factory=dict)
    max_tokens: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def assert_ok(self) -> None:
        assert not self.problems, "\n".join(self.problems[:20])


LimitFn = Callable[[str, str, datetime], tuple[int | None, int | None, int | None]]


def load_rows(conn: psycopg.Connection[tuple[object, ...]]) -> list[Row]:
    rows = conn.execute(
        "select id::text, quota_group, model, granted_at, status, estimated_tokens, "
        "actual_tokens, counted_requests, counted_tokens from public.google_ai_reservations"
    ).fetchall()
    return [Row(*r) for r in rows]  # type: ignore[arg-type]


def sliding_max(
    events: list[tuple[datetime, int, int]], width: timedelta, since: datetime | None
) -> Iterable[tuple[datetime, int, int]]:
    """For each event at or after `since`: (t, sum of weight, sum of overage)
    over the half-open window (t - width, t]."""
    events.sort(key=lambda e: e[0])
    times = [e[0] for e in events]
    weights = [0]
    overs = [0]
    for _, w, o in events:
        weights.append(weights[-1] + w)
        overs.append(overs[-1] + o)
    for i, (t, _, _) in enumerate(events):
        if since is not None and t < since:
            continue
        start = bisect_right(times, t - width)
        end = bisect_right(times, t)
        yield t, weights[end] - weights[start], overs[end] - overs[start]
        _ = i


def check(
    conn: psycopg.Connection[tuple[object, ...]],
    window: timedelta,
    limits: LimitFn,
    time_zone: str = "America/Los_Angeles",
    since: datetime | None = None,
) -> Report:
    report = Report()
    rows = load_rows(conn)
    report.grants = len(rows)
    by_key: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        by_key[(r.group, r.model)].append(r)

    for (group, model), items in by_key.items():
        reqs = [(r.granted_at, r.counted_requests, 0) for r in items]
        toks = [
            (
                r.granted_at,
                r.counted_tokens,
                max(0, (r.actual or 0) - r.estimated) if r.status == "committed" else 0,
            )
            for r in items
        ]
        worst_r = worst_t = 0
        for t, n, _ in sliding_max(reqs, window, since):
            rpm = limits(group, model, t)[0]
            worst_r = max(worst_r, n)
            if rpm is not None and n > rpm:
                report.problems.append(f"{group}/{model}: {n} requests in the window ending {t}")
        for t, n, over in sliding_max(toks, window, since):
            tpm = limits(group, model, t)[1]
            worst_t = max(worst_t, n)
            if tpm is not None and n - over > tpm:
                report.problems.append(
                    f"{group}/{model}: {n} tokens ({over} over estimates) in window ending {t}"
                )
        report.max_requests[(group, model)] = worst_r
        report.max_tokens[(group, model)] = worst_t

        per_day: dict[object, int] = defaultdict(int)
        zone = ZoneInfo(time_zone)
        for r in items:
            per_day[r.granted_at.astimezone(zone).date()] += r.counted_requests
        for day, n in per_day.items():
            rpd = limits(group, model, datetime.now(zone))[2]
            if rpd is not None and n > rpd:
                report.problems.append(f"{group}/{model}: {n} requests on {day}")

    # Exactly one terminal state, and an audit trail that agrees with it.
    audit = conn.execute(
        "select reservation_id::text, event from public.google_ai_audit_log "
        "where reservation_id is not null"
    ).fetchall()
    events: dict[str, list[str]] = defaultdict(list)
    for rid, event in audit:
        events[str(rid)].append(str(event))
    settle_event = {
        "committed": "committed",
        "released": "released",
        "rate_limited": "rate_limited",
        "expired": "expired",
    }
    for r in rows:
        trail = events.get(r.id, [])
        if trail.count("granted") != 1:
            report.problems.append(f"reservation {r.id}: {trail.count('granted')} granted rows")
        commits, releases = trail.count("committed"), trail.count("released")
        if commits > 1 or releases > 1 or (commits and releases):
            report.problems.append(f"reservation {r.id} settled twice: {trail}")
        if r.status == "reserved" and (commits or releases or "rate_limited" in trail):
            report.problems.append(f"reservation {r.id} is open but was settled: {trail}")
        if r.status in settle_event and settle_event[r.status] not in trail:
            report.problems.append(f"reservation {r.id} is {r.status}, audit says {trail}")
        if r.status == "released" and r.counted_requests == 0 and r.counted_tokens != 0:
            report.problems.append(f"reservation {r.id}: refunded request still holds tokens")

    refused = conn.execute(
        "select coalesce(sum(coalesce((details ->> 'count')::int, 1)), 0) "
        "from public.google_ai_audit_log where event = 'refused'"
    ).fetchone()
    report.refusals = int(refused[0]) if refused else 0
    return report
