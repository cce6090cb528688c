"""The bot's users first (issue 23), at full size and through PgBouncer, timed as people feel it.

Each scenario runs llm_limits.testing.policy_load on its own fresh database behind one PgBouncer
(transaction mode, 8 server connections), with 60 s windows (+1 s guard) and gemma-3-27b and
its seeded fallback gemma-3-12b at 30 RPM each, against the local fake Gemini:

* ``none``: the issue's scenario: 16 ``kaggle-batch`` processes call ``Client.generate(...,
  mode="WAIT")`` back to back from t = 0; from t = 10 s ``telegram-bot`` sends one short WAIT
  call (max_wait 30 s) every 4 s; seeded classes, no reserve; 4 minutes;
* ``gateway``: the same, the bot's calls through the llm-gateway (Deno runs the Edge Function
  locally, on the same pooler), timed around its HTTP call;
* ``half``: ``none`` with interactive's RPM reserve 0.5; ``idle``: that reserve, the bot idle;
* ``lone``: no policy row (everyone in class default), the bot idle: nothing is paced;
* ``fallback``: the batch alone takes 27b's window in one burst at t = 0 (no class above it has
  members yet), the bot's policy rows arrive at t = 20 s, and from t = 21 s (27b's next slot
  40 s away) the bot calls every 4 s until t = 45 s;
* ``aging``: four ``telegram-bot`` processes call back to back (interactive demand above the
  whole limit, 27b and 12b) and one ``kaggle-batch`` process calls with max_wait 180 s, for
  5.5 minutes; the bound is aging_ms (60 s) + one hold (61 s).

Every time is measured around ``generate()`` or the gateway's HTTP call; the model that
answered is what the call returned; use and 429s are the fake's own counts. The order check
(batch grants while a bot ticket waited) and the on_wait accuracy are described in
``policy_load``. Each scenario's figures are kept in ``bench-out/policy-<name>.json``, so
scenarios can be run one at a time (``--only``) and the section rendered from all of them.

    python -m bench.policy --admin-url postgresql://postgres@127.0.0.1:PORT/postgres [--only none]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from llm_limits.cli.gateway import FUNCTION_DIR
from llm_limits.testing import policy_load as pl
from llm_limits.testing import pooler as pgbouncer

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench-out"
POOL_SIZE = 8
FULL = pl.Load()
SCENARIOS: dict[str, pl.Load] = {
    "none": FULL,
    "gateway": FULL,
    "half": replace(FULL, rpm_reserve=0.5),
    "idle": replace(FULL, rpm_reserve=0.5, bot_every=None),
    "lone": replace(FULL, policies=False, bot_every=None),
    "fallback": replace(FULL, policies_at=20.0, bot_from=21.0, bot_until=45.0, seconds=100.0),
    "aging": replace(
        FULL,
        workers=(pl.Workers(pl.BOT, 4, 30.0), pl.Workers(pl.BATCH, 1, 180.0)),
        bot_every=None,
        seconds=330.0,
    ),  # fmt: skip
}
AGING_MS = 60_000
# The migration that brought pacing, the kept slot, aging and fallback in time (issue 23).
ISSUE_23_MIGRATION = "20261206000100"


def scenario(admin_url: str, pooled: Callable[[str], str], name: str) -> dict[str, Any]:
    """One scenario on a fresh database: its figures, prefixed ``policy_<name>_``."""
    from bench.run import fresh_db

    load = SCENARIOS[name]
    url = fresh_db(admin_url, f"bench_policy_{name}")
    with psycopg.connect(url, autocommit=True) as db, pl.fake_gemini(load) as srv:
        gateway = None
        if name == "gateway":
            gateway = partial(
                pl.gateway_bot, db, REPO / FUNCTION_DIR, pooled(url), srv, load.bot_max_wait
            )
        out = pl.run(db, pooled(url), load, srv, gateway)
        m = figures(db, out, load)
    m["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {f"policy_{name}_{k}": v for k, v in m.items()}


def fidelity(admin_url: str) -> dict[str, Any]:
    """A lone `default` caller (no policy row) as `make bench` measures utilization and grant
    lag (bench/run.py: 8 WAIT callers, 10 s windows, RPM- and TPM-bound), on a database with
    the migrations before issue 23 and on one with all of them, back to back."""
    from bench.run import utilization
    from bench.storage import design_db

    m: dict[str, Any] = {"policy_fidelity_date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    for name, before in (("before", ISSUE_23_MIGRATION), ("now", None)):
        url = design_db(admin_url, f"bench_fidelity_{name}", before)
        m.update(
            {f"policy_fidelity_{name}_{k}": v for k, v in utilization(admin_url, 4, url).items()}
        )
    return m


def figures(db: pl.Conn, out: pl.Outcome, load: pl.Load) -> dict[str, Any]:
    bot = out.of(pl.BOT)
    batch = out.of(pl.BATCH)
    times = sorted(c.seconds * 1000 for c in bot)
    told = pl.wait_reports(batch)
    # Once the first window has passed (a paced window is full from then on).
    steady = pl.wait_reports([c for c in batch if c.started >= out.started + load.window_ms / 1000])
    m: dict[str, Any] = {
        "seconds": load.seconds,
        "bot_calls": len(bot),
        "bot_p50_ms": statistics.median(times) if times else float("nan"),
        "bot_p95_ms": pl.p95(times),
        "bot_max_ms": max(times, default=float("nan")),
        "bot_slowest_ms": [round(t) for t in times[-5:]],
        "bot_refused": sum(1 for c in bot if c.outcome.startswith("refused")),
        "bot_errors": sorted({c.outcome for c in bot if c.outcome.startswith("error")}),
        "bot_on_27b": sum(1 for c in bot if c.model == pl.API_MODEL),
        "bot_on_12b": sum(1 for c in bot if c.model == pl.API_FALLBACK),
        "use_27b": out.use(pl.API_MODEL, load),
        "use_12b": out.use(pl.API_FALLBACK, load),
        "google_429s": out.google_429s,
        "batch_calls": len(batch),
        "batch_ok": sum(1 for c in batch if c.outcome == "ok"),
        "batch_on_12b": sum(1 for c in batch if c.model == pl.API_FALLBACK),
        "batch_refused": sum(1 for c in batch if c.outcome.startswith("refused")),
        "batch_errors": sorted({c.outcome for c in batch if c.outcome.startswith("error")}),
        "batch_max_ms": max((c.seconds * 1000 for c in batch if c.outcome == "ok"), default=0),
        "batch_ahead_of_bot": pl.batch_ahead_of_waiting_bot(db, out),
        "bot_told": sum(1 for c in bot if c.waits),
        "wait_calls_told": told.calls_told,
        "wait_counting_down": told.counting_down,
        "wait_steps": told.steps,
        "wait_rises": told.rises,
        "wait_rises_after_first": told.rises_after_first,
        "wait_steady_error_p50": steady.error_p50,
        "wait_steady_ratio_p50": steady.ratio_p50,
        "wait_steady_reports": steady.reports,
        "wait_reports": told.reports,
        "wait_error_p50": told.error_p50,
        "wait_ratio_p50": told.ratio_p50,
        **_pool_busy(out, load),
        "bot_slowest_trace": _trace_slowest(db, out),
    }
    if load.policies_at > 0:  # fallback: the first bot call, and the batch calls then in line
        first = min(bot, key=lambda c: c.started)
        at = first.started
        in_line = [c for c in batch if c.started <= at < c.started + c.seconds]
        m.update(
            first_bot_ms=first.seconds * 1000, first_bot_model=first.model,
            first_bot_at_s=at - out.started,
            next_slot_s=_next_slot(db, pl.MODEL, at, load) - at,
            batch_in_line=len(in_line),
            batch_in_line_models=sorted({str(c.model) for c in in_line}),
            batch_in_line_max_ms=max((c.seconds * 1000 for c in in_line), default=0),
        )  # fmt: skip
    return m


def _pool_busy(out: pl.Outcome, load: pl.Load) -> dict[str, Any]:
    """How often every server connection of the pooler was inside acquire, in the first window
    and after it, and how many slow bot calls (> 0.5 s) began while it was so."""
    full = [(t, n >= POOL_SIZE) for t, n in out.busy]
    first_end = out.started + load.window_ms / 1000

    def share(xs: list[bool]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    def full_at(t: float) -> bool:
        return min(full, key=lambda s: abs(s[0] - t))[1] if full else False

    slow = [c for c in out.of(pl.BOT) if c.seconds > 0.5]
    return {
        "pool_full_first": share([f for t, f in full if t < first_end]),
        "pool_full_after": share([f for t, f in full if t >= first_end]),
        "pool_busy_max": max((n for _, n in out.busy), default=0),
        "bot_slow": len(slow),
        "bot_slow_pool_full": sum(1 for c in slow if full_at(c.started)),
    }


def _trace_slowest(db: pl.Conn, out: pl.Outcome) -> dict[str, Any]:
    """The slowest bot call through the ledger: when (ms after the call began) its first
    acquire reached the database (its grant less the waited_ms counted from its ticket), when
    it was granted, and when the call returned; and the pooler's busy count then."""
    bot = [c for c in out.of(pl.BOT) if c.outcome == "ok"]
    if not bot:
        return {}
    c = max(bot, key=lambda c: c.seconds)
    row = db.execute(
        "select extract(epoch from granted_at), waited_ms, model from"
        " public.google_ai_reservations where caller = %s"
        " and (request_id = %s or %s::text is null)"
        " and granted_at >= to_timestamp(%s) order by granted_at limit 1",
        (pl.BOT, c.request_id, c.request_id, c.started),
    ).fetchone()
    if row is None:
        return {}
    granted, waited_ms = float(row[0]), int(row[1])  # type: ignore[arg-type, call-overload]
    near = [n for t, n in out.busy if c.started - 0.1 <= t <= c.started + c.seconds]
    return {
        "at_s": round(c.started - out.started, 1),
        "call_ms": round(c.seconds * 1000),
        "in_db_after_ms": round((granted - waited_ms / 1000 - c.started) * 1000),
        "db_waited_ms": waited_ms,
        "granted_after_ms": round((granted - c.started) * 1000),
        "model": row[2],
        "pool_busy_during": near,
    }


def _next_slot(db: pl.Conn, model: str, at: float, load: pl.Load) -> float:
    """When the oldest grant counted in ``model``'s window at ``at`` (epoch s) leaves it."""
    row = db.execute(
        "select extract(epoch from min(granted_at)) from public.google_ai_reservations"
        " where model = %s and granted_at > to_timestamp(%s) - make_interval(secs => %s)",
        (model, at, (load.window_ms + load.guard_ms) / 1000),
    ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0]) + (load.window_ms + load.guard_ms) / 1000


def policy_run(admin_url: str, only: list[str] | None = None) -> dict[str, Any]:
    """The scenarios (all, or ``only``), one after another, behind one PgBouncer."""
    m: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="llm-limits-pgbouncer.") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # PgBouncer runs as postgres
        bouncer = pgbouncer.up(root / "pgbouncer", admin_url, POOL_SIZE)
        try:
            for name in only or [*SCENARIOS, "fidelity"]:
                if name == "fidelity":
                    got = fidelity(admin_url)
                else:
                    got = scenario(admin_url, lambda url: bouncer.url(url.rsplit("/", 1)[1]), name)
                OUT.mkdir(exist_ok=True)
                (OUT / f"policy-{name}.json").write_text(json.dumps(got, indent=1))
                m.update(got)
                with psycopg.connect(admin_url, autocommit=True) as conn:  # and its pool goes
                    for db in (
                        f"bench_policy_{name}",
                        "bench_fidelity_before",
                        "bench_fidelity_now",
                    ):
                        conn.execute(f'drop database if exists "{db}" with (force)')
        finally:
            pgbouncer.down(root / "pgbouncer")
    return m


# --- the report ---------------------------------------------------------------------------------

BEGIN, END = "<!-- bench:policy:begin -->", "<!-- bench:policy:end -->"


def _ok(cond: bool) -> str:
    return "met" if cond else "**not met**"


def _bot(m: dict[str, Any], n: str) -> str:
    return (
        f"bot p50 / p95 / max {m[f'{n}_bot_p50_ms']:.0f} / {m[f'{n}_bot_p95_ms']:.0f} /"
        f" {m[f'{n}_bot_max_ms']:.0f} ms over {m[f'{n}_bot_calls']} calls"
        f" ({m[f'{n}_bot_on_27b']} on 27b, {m[f'{n}_bot_on_12b']} on 12b),"
        f" {m[f'{n}_bot_refused']} refused"
    )


def _pool(m: dict[str, Any], n: str) -> str:
    return (
        f"27b served {m[f'{n}_use_27b']:.1%} of 30 per minute (12b {m[f'{n}_use_12b']:.1%});"
        f" {m[f'{n}_google_429s']} 429s"
    )


def _told(m: dict[str, Any], n: str) -> str:
    return (
        f"{m[f'{n}_wait_counting_down']} of {m[f'{n}_wait_calls_told']} calls"
        f" told ≥ 2 times counted down from their second report"
        f" ({m[f'{n}_wait_rises']} of {m[f'{n}_wait_steps']} steps went up,"
        f" {m[f'{n}_wait_rises_after_first']} after the first); expected/real p50"
        f" {m[f'{n}_wait_ratio_p50']:.2f}, relative error p50 {m[f'{n}_wait_error_p50']:.0%}"
        f" ({m[f'{n}_wait_reports']} reports; calls begun after the first window:"
        f" {m[f'{n}_wait_steady_ratio_p50']:.2f}, {m[f'{n}_wait_steady_error_p50']:.0%})"
    )


def _busy(m: dict[str, Any], n: str) -> str:
    if f"{n}_pool_full_first" not in m:
        return ""
    text = (
        f"; all {POOL_SIZE} pooler connections inside acquire"
        f" {m[f'{n}_pool_full_first']:.0%} of the first window and"
        f" {m[f'{n}_pool_full_after']:.0%} after it; bot calls over 0.5 s:"
        f" {m[f'{n}_bot_slow']}, {m[f'{n}_bot_slow_pool_full']} of them begun while so"
    )
    trace = m.get(f"{n}_bot_slowest_trace") or {}
    if trace:
        text += (
            f"; the slowest ({trace['call_ms']} ms, at t = {trace['at_s']:.0f} s): its granting"
            f" acquire reached the database {trace['in_db_after_ms']} ms after the call began"
            f" and took {trace['db_waited_ms']} ms there; the call returned"
            f" {trace['call_ms'] - trace['granted_after_ms']} ms after its grant (the Google"
            f" call, then settle)"
        )
    return text


def section(m: dict[str, Any]) -> str:
    """The policy table, between its own markers (``--only`` runs rewrite just this part)."""
    p = "policy"
    rows = [BEGIN, "", "The bot's users first (issue 23, `bench/policy.py`): full size (60 s"
            " windows + 1 s guard, 27b and 12b at 30 RPM), through PgBouncer (transaction mode,"
            " 8 server connections), whole calls timed around `generate()` or the gateway's HTTP"
            " call.", "", "| scenario (run) | figures | goal | |", "|---|---|---|---|"]  # fmt: skip
    for name, label in (("none", "16 batch processes, bot every 4 s, no reserve"),
                        ("gateway", "the same, the bot through the llm-gateway")):  # fmt: skip
        n = f"{p}_{name}"
        if f"{n}_bot_calls" not in m:
            continue
        met = (m[f"{n}_bot_p95_ms"] <= 2500 and m[f"{n}_bot_max_ms"] <= 5000
               and m[f"{n}_bot_refused"] == 0 and m[f"{n}_use_27b"] >= 0.95
               and m[f"{n}_google_429s"] == 0)  # fmt: skip
        rows.append(
            f"| {label} ({m[f'{n}_date']}, {m[f'{n}_seconds']:.0f} s) | {_bot(m, n)};"
            f" {_pool(m, n)};"
            f" batch grants on 27b while a bot call stood in line: {m[f'{n}_batch_ahead_of_bot']}"
            f" ({m[f'{n}_bot_told']} bot calls were told they were in line){_busy(m, n)} |"
            f" bot p95 ≤ 2.5 s, max ≤ 5 s, 0 refused; 27b ≥ 95%; 0 429s | {_ok(met)} |"
        )
    n = f"{p}_half"
    if f"{n}_bot_calls" in m:
        rows.append(
            f"| interactive RPM reserve 0.5 ({m[f'{n}_date']}) | {_bot(m, n)}; {_pool(m, n)}"
            f"{_busy(m, n)} |"
            f" bot p95 ≤ 0.5 s | {_ok(m[f'{n}_bot_p95_ms'] <= 500)} |"
        )
    n = f"{p}_idle"
    if f"{n}_use_27b" in m:
        rows.append(
            f"| reserve 0.5, the bot idle the whole run ({m[f'{n}_date']}) | {_pool(m, n)} |"
            f" batch ≥ 95% of RPM | {_ok(m[f'{n}_use_27b'] >= 0.95)} |"
        )
    n = f"{p}_lone"
    if f"{n}_use_27b" in m:
        rows.append(
            f"| no policy row: 16 `default` processes alone ({m[f'{n}_date']}) | {_pool(m, n)} |"
            f" as before (30 per 61 s: 98.4%) |"
            f" {_ok(m[f'{n}_use_27b'] >= 0.95)} |"
        )
    n = f"{p}_fidelity"
    if f"{n}_now_util_util-rpm" in m:
        b, w = f"{n}_before", f"{n}_now"
        same = abs(m[f"{w}_util_util-rpm"] - m[f"{b}_util_util-rpm"]) <= 0.01 and abs(
            m[f"{w}_util_util-tpm"] - m[f"{b}_util_util-tpm"]) <= 0.01  # fmt: skip
        rows.append(
            f"| the same as `make bench`'s utilization (8 WAIT callers, 10 s windows), migrations"
            f" before {ISSUE_23_MIGRATION} → all ({m[f'{n}_date']}) | RPM-bound"
            f" {m[f'{b}_util_util-rpm']:.1%} → {m[f'{w}_util_util-rpm']:.1%}, TPM-bound"
            f" {m[f'{b}_util_util-tpm']:.1%} → {m[f'{w}_util_util-tpm']:.1%}; grant lag after a"
            f" slot frees p50 / p95 {m[f'{b}_lag_window_p50']:.0f} / {m[f'{b}_lag_window_p95']:.0f}"
            f" → {m[f'{w}_lag_window_p50']:.0f} / {m[f'{w}_lag_window_p95']:.0f} ms |"
            f" utilization unchanged | {_ok(same)} |"
        )
    told = [(name, f"{p}_{name}") for name in ("none", "gateway", "half", "idle", "lone")]
    told = [(name, n) for name, n in told if f"{n}_wait_reports" in m]
    if told:
        met = all(
            m[f"{n}_wait_counting_down"] == m[f"{n}_wait_calls_told"]
            and m[f"{n}_wait_error_p50"] <= 0.25
            for _, n in told
        )
        rows.append(
            "| `on_wait` of the batch waiters, by scenario | "
            + "; ".join(f"{name}: {_told(m, n)}" for name, n in told)
            + f" | places count down; expected wait within 25% (p50) | {_ok(met)} |"
        )
    n = f"{p}_fallback"
    if f"{n}_first_bot_ms" in m:
        met = (m[f"{n}_first_bot_ms"] <= 2500 and m[f"{n}_first_bot_model"] == pl.API_FALLBACK
               and m[f"{n}_batch_on_12b"] == 0)  # fmt: skip
        rows.append(
            f"| fallback_after_ms: 27b's window taken by the batch, its next slot"
            f" {m[f'{n}_next_slot_s']:.1f} s away ({m[f'{n}_date']}) | first bot call"
            f" {m[f'{n}_first_bot_ms']:.0f} ms, answered by {m[f'{n}_first_bot_model']};"
            f" {_bot(m, n)}; {m[f'{n}_batch_in_line']} batch calls in line then, answered by"
            f" {', '.join(m[f'{n}_batch_in_line_models'])} after up to"
            f" {m[f'{n}_batch_in_line_max_ms'] / 1000:.1f} s; batch calls on 12b:"
            f" {m[f'{n}_batch_on_12b']} | bot by 12b ≤ 2.5 s; batch not moved | {_ok(met)} |"
        )
    n = f"{p}_aging"
    if f"{n}_batch_calls" in m:
        bound = AGING_MS + FULL.window_ms + FULL.guard_ms
        met = m[f"{n}_batch_ok"] >= 1 and m[f"{n}_batch_max_ms"] <= bound
        served = [round(m[f"{n}_use_{x}"] * m[f"{n}_seconds"] / 60 * 30) for x in ("27b", "12b")]
        rows.append(
            f"| aging: 4 bot processes back to back, 1 batch process ({m[f'{n}_date']},"
            f" {m[f'{n}_seconds']:.0f} s) | batch: {m[f'{n}_batch_ok']} of"
            f" {m[f'{n}_batch_calls']} calls granted, the longest"
            f" {m[f'{n}_batch_max_ms'] / 1000:.1f} s, granted while bot calls stood in line"
            f" (aging's point); bot: {m[f'{n}_bot_calls']} calls, {m[f'{n}_bot_refused']} refused"
            f" at their 30 s; the fake served {served[0]} calls on 27b and {served[1]} on 12b in"
            f" {m[f'{n}_seconds']:.0f} s (bursts a hold apart); {m[f'{n}_google_429s']} 429s |"
            f" every batch call ≤ {bound / 1000:.0f} s | {_ok(met)} |"
        )
    rows += ["", END]
    return "\n".join(rows) + "\n"


def write_section(text: str, path: Path) -> None:
    """Replace the policy section of ``path`` (inside make bench's block) with ``text``."""
    doc = path.read_text()
    if BEGIN not in doc:
        raise SystemExit(f"{path} has no {BEGIN}: run make bench once, or add the markers")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + text.strip("\n") + tail)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--only", help="comma-separated: " + ", ".join([*SCENARIOS, "fidelity"]))
    parser.add_argument("--render", action="store_true",
                        help="only render bench-out/policy-*.json into BENCHMARKS.md")  # fmt: skip
    args = parser.parse_args()
    if not args.render:
        policy_run(args.admin_url, args.only.split(",") if args.only else None)
    m: dict[str, Any] = {}
    for f in sorted(OUT.glob("policy-*.json")):
        m.update(json.loads(f.read_text()))
    text = section(m)
    print(text)
    write_section(text, REPO / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
