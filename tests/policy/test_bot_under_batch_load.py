"""The bot and the notebooks on one pool, through PgBouncer (transaction mode, pool 8), timed
around each call as the bot's users feel it (llm_limits.testing.policy_load).

Sixteen `kaggle-batch` processes (real clients, the real SDK, the local fake Gemini) call
gemma-3-27b back to back with WAIT; `telegram-bot` (interactive) sends one short WAIT call on a
fixed schedule. Time runs five times faster than in issue 23 (`make bench` runs it at full
size, bench/policy.py): a 12 s window + 200 ms guard (30 RPM stays 30 per window), wait slices
of 400 ms (the longest a waiter holds a pooler connection), fallback after 400 ms, the bot every 0.8 s from t = 2 s with
max_wait 6 s, for three windows. The grace a late waiter keeps its place for stays 1 s: it
allows for this machine, not for the policy. The issue's bounds scale with the rest:

* no reserve: the bot's whole calls p95 <= 0.5 s and max <= 1 s, none refused; 27b serves
  >= 0.95 of its RPM; no 429;
* a burst of bot calls (one every 0.2 s, twice the limit) among the batch: bot calls stand in
  line, and no batch call is granted on 27b while one does;
* the same with the bot's calls through the llm-gateway, timed around its HTTP call;
* interactive RPM reserve 0.5: the bot's p95 <= 0.1 s (known to miss it while the pooler is
  full in the first window, see the test), and while the bot is active the batch never holds
  more than its share of a window;
* the bot idle, reserve 0.5: the batch alone still gets >= 0.95 of RPM, and on_wait tells each
  waiter places that count down and an expected wait within 25% of the real one (p50; known
  to miss it while the first window is paced, see the test);
* no policy row (a lone `default` caller): nothing is paced, the window is taken at once.

Every run's ledger is re-checked against the limit independently (tests/stress/checker.py).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from functools import partial

import pytest

from llm_limits.cli.gateway import FUNCTION_DIR
from llm_limits.testing import policy_load as pl
from tests.client.support import Conn
from tests.conftest import pooled
from tests.gateway.harness import ROOT
from tests.stress.checker import check

SCALE = 5
SCALED = pl.Load(
    window_ms=60_000 // SCALE, guard_ms=1000 // SCALE, slice_ms=2000 // SCALE,
    fallback_after_ms=2000 // SCALE, bot_every=4.0 / SCALE,
    bot_from=10.0 / SCALE, bot_max_wait=30.0 / SCALE,
    workers=(pl.Workers(pl.BATCH, 16, 120.0 / SCALE),),
    seconds=3 * (60 + 1) / SCALE + 1.0,
)  # fmt: skip


def load(db: Conn, db_url: str, scenario: pl.Load, bot: str = "client") -> pl.Outcome:
    url = pooled(db_url)
    with pl.fake_gemini(scenario) as srv:
        gateway = None
        if bot == "gateway":
            gateway = partial(
                pl.gateway_bot, db, ROOT / FUNCTION_DIR, url, srv, scenario.bot_max_wait
            )
        out = pl.run(db, url, scenario, srv, gateway)
    errors = {c.outcome for c in out.calls if c.outcome.startswith("error")}
    assert errors == set() and out.google_429s == 0
    window = timedelta(milliseconds=scenario.window_ms)
    check(db, window, lambda g, m, t: (scenario.rpm, None, 100_000)).assert_ok()
    return out


def bot_times(out: pl.Outcome) -> list[float]:
    bot = out.of(pl.BOT)
    assert len(bot) >= 25 and all(c.outcome == "ok" for c in bot), bot
    return sorted(c.seconds for c in bot)


@pytest.mark.parametrize("bot", ["client", "gateway"])
def test_without_a_reserve_the_bot_is_answered_at_once(db: Conn, db_url: str, bot: str) -> None:
    out = load(db, db_url, SCALED, bot)
    times = bot_times(out)
    assert pl.p95(times) <= 2.5 / SCALE and times[-1] <= 5.0 / SCALE, times
    assert out.use(pl.API_MODEL, SCALED) >= 0.95, out.use(pl.API_MODEL, SCALED)
    # The batch waiters are told their turn with the bot's share of the slots counted in.
    batch = out.of(pl.BATCH)
    told = pl.wait_reports(batch, pl.burst_answered(batch, SCALED.workers[0].count))
    assert told.counting_down == told.calls_told, told
    # The share is the slots the bot took in the last window: a report given before the bot
    # had a window of history (the batch's first burst is in line when the bot begins) cannot
    # count the bot calls still to come, and is judged only for counting down.
    first_bot = min(c.started for c in out.of(pl.BOT))
    hold_s = (SCALED.window_ms + SCALED.guard_ms) / 1000
    steady = pl.wait_reports([c for c in batch if c.started >= first_bot + hold_s])
    assert steady.reports >= 16 and steady.error_p50 <= 0.25, steady


def test_no_batch_call_is_granted_while_a_bot_call_stands_in_line(db: Conn, db_url: str) -> None:
    burst = replace(SCALED, bot_every=1.0 / SCALE, bot_until=60.0 / SCALE, seconds=80.0 / SCALE)
    out = load(db, db_url, burst)
    in_line = [c for c in out.of(pl.BOT) if c.waits]
    assert len(in_line) >= 5, out.of(pl.BOT)
    assert pl.batch_ahead_of_waiting_bot(db, out) == 0


def test_with_a_reserve_the_bot_is_served_at_once(db: Conn, db_url: str) -> None:
    scenario = replace(SCALED, rpm_reserve=0.5)
    out = load(db, db_url, scenario)
    times = bot_times(out)
    # While the bot was active (until its last grant), the batch never held more than its share
    # of a window: half of the rate, less the bot's slots held for the guard too (14 of 30).
    grants = pl.ledger(db)
    last_bot = max(t for t, caller, _ in grants if caller == pl.BOT)
    batch = [t for t, caller, _ in grants if caller == pl.BATCH and t <= last_bot]
    hold = timedelta(milliseconds=scenario.window_ms + scenario.guard_ms)
    most = max(sum(1 for t in batch if s - hold < t <= s) for s in batch)
    assert most <= scenario.rpm // 2, most
    # Told their paced turn (group_slots), batch waiters sleep without a connection instead of
    # waiting for each other inside acquire, so the bot's acquire finds the pooler free.
    assert pl.p95(times) <= 0.5 / SCALE, times


def test_an_idle_bot_lends_its_reserve_and_the_batch_is_told_its_place(
    db: Conn, db_url: str
) -> None:
    scenario = replace(SCALED, rpm_reserve=0.5, bot_every=None)
    out = load(db, db_url, scenario)
    assert out.use(pl.API_MODEL, scenario) >= 0.95, out.use(pl.API_MODEL, scenario)
    batch = out.of(pl.BATCH)
    # A call's first answer cannot count the places taken at the same moment (not committed
    # yet); from its second report on, a batch waiter's place only counts down, once the 16
    # places taken together at the start are all committed (pl.burst_answered).
    # Most of the workers' calls wait in line at least once (some are granted on arrival);
    # those told twice or more are judged for counting down (quiet runs: 15-19 such calls of
    # 94; a clean clone's CI run beside the other tests: 9, when paced turns came on time).
    assert sum(1 for c in batch if c.waits) > len(batch) // 2, batch
    told = pl.wait_reports(batch, pl.burst_answered(batch, scenario.workers[0].count))
    assert told.calls_told >= 4 and told.counting_down == told.calls_told, told
    hold_s = (scenario.window_ms + scenario.guard_ms) / 1000
    steady = pl.wait_reports([c for c in batch if c.started >= out.started + hold_s])
    assert steady.reports >= 16 and steady.error_p50 <= 0.25, steady
    # The first window too: the estimate counts the pace free slots are handed out at.
    assert told.error_p50 <= 0.25, told


def test_a_lone_default_caller_takes_the_window_at_once(db: Conn, db_url: str) -> None:
    """No class above `default` has members: nothing is paced, as before issue 23."""
    scenario = replace(SCALED, policies=False, bot_every=None, seconds=3.0)
    load(db, db_url, scenario)
    grants = [t for t, _, model in pl.ledger(db) if model == pl.MODEL]
    assert len(grants) == scenario.rpm
    # Paced, 30 grants would take 29 emission intervals (about 12 s here).
    assert grants[-1] - grants[0] < timedelta(seconds=1), grants[-1] - grants[0]
