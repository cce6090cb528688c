"""Fair turns between the bot's people (issue 25), at full size, through the bot's own handler.

The Telegram bot of examples/telegram_bot runs in this process as it runs in production: one
``Client`` (through PgBouncer, transaction mode, 8 server connections), aiogram's Dispatcher,
every message an asyncio task of its own; Telegram is the recording session of tests/bot (no
network), Google the local fake. gemma-3-27b and its seeded fallback gemma-3-12b at 30 RPM
each on the production window (60 s + 1 s guard), ``telegram-bot`` in class interactive with
its seeded per-person limits, for 4 minutes:

* one person (the flooder) sends 20 messages at once, then one every 2 s;
* 10 other people send one message every 40 s each, their first ones 4 s apart from t = 0.

Each message is timed as its sender feels it: from the update's arrival (``feed_update``) to
the bot's last write of its reply (the answer, or the refusal, edited into the place-in-line
message). Its outcome is what the reply says (the bot's Russian texts, read back into the
reason). The flooder's grants per 60 s come from the ledger (by its ``end_user``'s keyed hash), the
429s from the fake, the refusals by reason from ``google_ai_refusals``.

Goals: the others' whole-call p95 <= 2.5 s and none refused; the flooder served at most 6 in
any 60 s and refused with ``end_user_limit`` past that; 0 429s.

    python -m bench.fair_turns --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
    python -m bench.fair_turns --admin-url ... --scale 4     # a 1-minute check, not reported
    python -m bench.fair_turns --render                      # bench-out/fair-turns.json only

``make bench`` runs it at full size (bench/run.py); a full-size run alone rewrites only its
section of BENCHMARKS.md; a scaled run prints its figures and writes
``bench-out/fair-turns-scaled.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiogram import Bot, Dispatcher

from examples.telegram_bot import bot as telegram_bot
from llm_limits import Client
from llm_limits.testing import policy_load as pl
from llm_limits.testing import pooler as pgbouncer
from tests.bot.recording_session import RecordingSession, text_update

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench-out"
POOL_SIZE = 8
FLOODER = 7_000_000
OTHERS = range(7_000_001, 7_000_011)
OK = "ok"


@dataclass(frozen=True)
class Scenario:
    """The issue's run at full size; ``scaled(n)`` runs every time n times faster."""

    window_ms: int = 60_000
    guard_ms: int = 1000
    slice_ms: int = 2000
    fallback_after_ms: int = 2000
    seconds: float = 240.0
    burst: int = 20
    flood_every: float = 2.0
    others_every: float = 40.0
    others_apart: float = 4.0
    max_wait: float = 30.0  # the bot's own
    scale: int = 1

    def scaled(self, n: int) -> Scenario:
        return replace(
            self, window_ms=self.window_ms // n, guard_ms=self.guard_ms // n,
            slice_ms=self.slice_ms // n, fallback_after_ms=self.fallback_after_ms // n,
            seconds=self.seconds / n, flood_every=self.flood_every / n,
            others_every=self.others_every / n, others_apart=self.others_apart / n,
            max_wait=self.max_wait / n, scale=n,
        )  # fmt: skip

    def load(self) -> pl.Load:
        """The policy load's settings for this run: its key, window, 27b and 12b at 30 RPM,
        the seeded classes with telegram-bot in interactive (no batch workers here)."""
        return pl.Load(
            window_ms=self.window_ms, guard_ms=self.guard_ms, workers=(), bot_every=None,
            seconds=self.seconds, slice_ms=self.slice_ms, fallback_after_ms=self.fallback_after_ms,
        )  # fmt: skip


@dataclass(frozen=True)
class Message:
    """One message as its sender saw it: seconds into the run it was sent, how long until the
    bot's reply was final, the reply's outcome ("ok" or the refusal's reason), and what the
    reply showed first: a place in line, or a wait out of line for the person's next slot."""

    person: int
    at: float
    seconds: float
    outcome: str
    in_line: bool  # told a place in line
    too_fast: bool  # told to wait out of line for the person's own next slot


def schedule(s: Scenario) -> list[tuple[float, int]]:
    """(seconds into the run, person) of every message, in time order."""
    out = [(0.0, FLOODER)] * s.burst
    at = s.flood_every
    while at < s.seconds:
        out.append((at, FLOODER))
        at += s.flood_every
    for i, person in enumerate(OTHERS):
        at = i * s.others_apart
        while at < s.seconds:
            out.append((at, person))
            at += s.others_every
    return sorted(out)


def says(template: str, text: str) -> bool:
    """Whether ``text`` is one of the bot's texts ``template`` with its blanks filled."""
    return re.fullmatch(re.sub(r"\\\{\w+\\\}", ".+", re.escape(template)), text) is not None


def outcome_of(reply: str | None) -> str:
    """The reason a reply says, read back from the bot's own texts."""
    if reply is None:
        return "error: no reply"
    if reply.startswith("fake reply to:"):
        return OK
    for reason, text in [*telegram_bot.REFUSALS.items(), ("busy", telegram_bot.BUSY)]:
        if says(text, reply):
            return reason
    return f"error: {reply}"


async def send(dp: Dispatcher, bot: Bot, telegram: RecordingSession, person: int, at: float,
               n: int) -> Message:  # fmt: skip
    update = text_update(person, f"Сообщение {n}: когда откроется касса?")
    t0 = time.monotonic()
    await dp.feed_update(bot, update)
    seconds = time.monotonic() - t0
    assert update.message is not None
    shown = telegram.reply_to(person, update.message.message_id)
    in_line = any(says(telegram_bot.IN_LINE, text) for text in shown[:-1])
    too_fast = any(says(telegram_bot.TOO_FAST, text) for text in shown[:-1])
    return Message(person, at, seconds, outcome_of(shown[-1] if shown else None), in_line, too_fast)


async def drive(url: str, srv: Any, s: Scenario) -> tuple[list[Message], float]:
    """The bot under the schedule; returns every message and the run's start (epoch s)."""
    telegram = RecordingSession()
    bot = telegram.bot()
    async with Client(url, base_url=srv.base_url, caller=telegram_bot.CALLER) as llm:
        await llm.agenerate(pl.WARM_UP_MODEL, "warm-up", caller="bench-warm-up", max_wait=30.0)
        dp = telegram_bot.build_dispatcher(llm, max_wait=s.max_wait)
        tasks = []
        t0, began = time.monotonic(), time.time()
        for n, (at, person) in enumerate(schedule(s)):
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            tasks.append(asyncio.create_task(send(dp, bot, telegram, person, at, n)))
        return list(await asyncio.gather(*tasks)), began


def figures(db: pl.Conn, messages: list[Message], srv: Any, s: Scenario) -> dict[str, Any]:
    others = [m for m in messages if m.person != FLOODER]
    flood = [m for m in messages if m.person == FLOODER]
    times = sorted(m.seconds * 1000 for m in others)
    flooder = telegram_bot.end_user_of(FLOODER)
    row = db.execute(
        "select count(*), coalesce(max(n), 0) from (select count(*) over (order by granted_at"
        " range between make_interval(secs => %s) - interval '1 microsecond' preceding and"
        " current row) as n from public.google_ai_reservations"
        " where end_user_hash = google_ai_internal.end_user_hash(%s)"
        " and status = 'committed') as w",
        (s.window_ms / 1000, flooder),
    ).fetchone()
    assert row is not None
    refusals = dict(db.execute(
        "select coalesce(reason, '?'), sum(refusals)::int from public.google_ai_refusals"
        " group by 1 order by 1").fetchall())  # fmt: skip
    models = dict(db.execute(
        "select model, count(*)::int from public.google_ai_reservations"
        " where caller = %s and status = 'committed' group by 1 order by 1",
        (telegram_bot.CALLER,)).fetchall())  # fmt: skip
    return {
        "seconds": s.seconds,
        "scale": s.scale,
        "others_sent": len(others),
        "others_ok": sum(1 for m in others if m.outcome == OK),
        "others_refused": sorted(m.outcome for m in others if m.outcome != OK),
        "others_p50_ms": statistics.median(times) if times else float("nan"),
        "others_p95_ms": pl.p95(times),
        "others_max_ms": max(times, default=float("nan")),
        "others_slowest_ms": [round(t) for t in times[-5:]],
        "flood_sent": len(flood),
        "flood_ok": sum(1 for m in flood if m.outcome == OK),
        "flood_end_user_limit": sum(1 for m in flood if m.outcome == "end_user_limit"),
        "flood_other": sorted({m.outcome for m in flood} - {OK, "end_user_limit"}),
        "flood_refusal_p95_ms": pl.p95([m.seconds * 1000 for m in flood if m.outcome != OK]),
        "flood_waited_ok": sum(1 for m in flood if m.too_fast and m.outcome == OK),
        "flood_waited_refused": sum(1 for m in flood if m.too_fast and m.outcome != OK),
        "others_waited": sum(1 for m in others if m.in_line),
        "flood_grants": int(row[0]),
        "flood_max_per_window": int(row[1]),
        "refusals_by_reason": refusals,
        "grants_by_model": models,
        "google_429s": srv.stats().rate_limited,
    }


def run(admin_url: str, s: Scenario) -> dict[str, Any]:
    """The scenario on a fresh database behind its own PgBouncer: its figures, ``fair_...``."""
    from bench.run import fresh_db

    name = "bench_fair_turns"
    url = fresh_db(admin_url, name)
    load = s.load()
    with tempfile.TemporaryDirectory(prefix="llm-limits-pgbouncer.") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # PgBouncer runs as postgres
        bouncer = pgbouncer.up(root / "pgbouncer", admin_url, POOL_SIZE)
        try:
            with psycopg.connect(url, autocommit=True) as db, pl.fake_gemini(load) as srv:
                pl.prepare(db, load)
                os.environ[pl.KEY_VAR] = pl.KEY_VALUE
                messages, _ = asyncio.run(drive(bouncer.url(name), srv, s))
                m = figures(db, messages, srv, s)
        finally:
            pgbouncer.down(root / "pgbouncer")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
    m["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {f"fair_{k}": v for k, v in m.items()}


def fair_turns_run(admin_url: str) -> dict[str, Any]:
    """``make bench``'s step: the full-size run, kept in bench-out/fair-turns.json."""
    m = run(admin_url, Scenario())
    OUT.mkdir(exist_ok=True)
    (OUT / "fair-turns.json").write_text(json.dumps(m, indent=1))
    return m


# --- the report ---------------------------------------------------------------------------------

BEGIN, END = "<!-- bench:fair-turns:begin -->", "<!-- bench:fair-turns:end -->"


def met(m: dict[str, Any]) -> bool:
    scale = m["fair_scale"]
    return (m["fair_others_p95_ms"] <= 2500 / scale and not m["fair_others_refused"]
            and m["fair_flood_max_per_window"] <= 6 and not m["fair_flood_other"]
            and m["fair_flood_end_user_limit"] > 0 and m["fair_google_429s"] == 0)  # fmt: skip


def section(m: dict[str, Any]) -> str:
    """The fair-turns table, between its own markers."""
    if "fair_others_sent" not in m:
        return ""
    f = {k.removeprefix("fair_"): v for k, v in m.items() if k.startswith("fair_")}
    full = Scenario()
    refused = ", ".join(f["others_refused"]) or "none"
    other = ", ".join(f["flood_other"]) or "none"
    rows = [
        BEGIN, "",
        "Fair turns between the bot's people (issue 25, `bench/fair_turns.py`): the bot's own"
        " aiogram handler fed Telegram updates (recording session, no network), one `Client`"
        " through PgBouncer (transaction mode, 8 server connections), gemma-3-27b and 12b at"
        " 30 RPM on 60 s windows + 1 s guard, `telegram-bot` in class interactive with its"
        " seeded per-person limits; whole calls timed from the update to the reply's last"
        " write.", "",
        "| run | figures | goal | |", "|---|---|---|---|",
        f"| one person sends {full.burst} messages at once, then one every"
        f" {full.flood_every:.0f} s; {len(OTHERS)} others one every {full.others_every:.0f} s each"
        f" ({f['date']}, {f['seconds']:.0f} s) | others: {f['others_ok']} of {f['others_sent']}"
        f" answered, p50 / p95 / max {f['others_p50_ms']:.0f} / {f['others_p95_ms']:.0f} /"
        f" {f['others_max_ms']:.0f} ms, {f['others_waited']} told a place in line, refused:"
        f" {refused}; flooder: {f['flood_ok']} of {f['flood_sent']} answered, most grants in"
        f" any 60 s {f['flood_max_per_window']}, {f['flood_end_user_limit']} refused with"
        f" end_user_limit (told in p95 {f['flood_refusal_p95_ms']:.0f} ms); of the flooder's"
        f" messages that waited for the person's next slot, {f['flood_waited_ok']} answered and"
        f" {f['flood_waited_refused']} refused; other outcomes: {other}; grants by model"
        f" {f['grants_by_model']}; refusals in the database by reason"
        f" {f['refusals_by_reason']}; {f['google_429s']} 429s |"
        " others p95 ≤ 2.5 s, none refused; flooder ≤ 6 per 60 s, refused with end_user_limit;"
        f" 0 429s | {'met' if met(m) else '**not met**'} |",
        "", END,
    ]  # fmt: skip
    return "\n".join(rows) + "\n"


def write_section(text: str, path: Path) -> None:
    """Replace the fair-turns section of ``path``, or put it after the policy section."""
    doc = path.read_text()
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(head + text.strip("\n") + tail)
        return
    from bench.policy import END as POLICY_END

    if POLICY_END not in doc:
        raise SystemExit(f"{path} has no {POLICY_END}: run make bench once, or add the markers")
    head, tail = doc.split(POLICY_END, 1)
    path.write_text(f"{head}{POLICY_END}\n\n{text.strip()}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url")
    parser.add_argument("--scale", type=int, default=1, help="run n times faster (not reported)")
    parser.add_argument(
        "--render", action="store_true", help="only render bench-out/fair-turns.json"
    )
    args = parser.parse_args()
    if args.scale > 1:
        m = run(args.admin_url, Scenario().scaled(args.scale))
        OUT.mkdir(exist_ok=True)
        (OUT / "fair-turns-scaled.json").write_text(json.dumps(m, indent=1))
        print(json.dumps(m, indent=1))
        print("goals (scaled):", "met" if met(m) else "not met")
        return
    if not args.render:
        if not args.admin_url:
            parser.error("--admin-url is required unless --render")
        fair_turns_run(args.admin_url)
    m = json.loads((OUT / "fair-turns.json").read_text())
    text = section(m)
    print(text)
    write_section(text, REPO / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
