"""Fallback in time, through PgBouncer: when 27b's next slot is far away, the bot is answered by
its fallback (12b) once it has waited fallback_after_ms; the batch is not moved.

Sixteen `kaggle-batch` processes take gemma-3-27b's window in one burst at t = 0 (no class
above batch has members yet, so nothing is paced), and then wait for it. At t = 4 s the bot's
policy rows arrive, and from t = 4.2 s the bot calls (27b's next slot is 8 s away). Time runs
five times faster than in issue 23 (bench/policy.py has the full size): a 12 s window + 200 ms
guard, fallback after 400 ms (the seeded 2 s), so the issue's 2.5 s is 0.5 s here.
"""

from __future__ import annotations

from dataclasses import replace

from llm_limits.testing import policy_load as pl
from tests.client.support import Conn

from .test_bot_under_batch_load import SCALE, SCALED, load

FALLBACK = replace(
    SCALED, policies_at=20.0 / SCALE, bot_from=21.0 / SCALE, bot_until=45.0 / SCALE,
    seconds=100.0 / SCALE,
)  # fmt: skip


def test_the_bot_is_answered_by_12b_and_the_batch_waits_for_27b(db: Conn, db_url: str) -> None:
    out = load(db, db_url, FALLBACK)
    bot = out.of(pl.BOT)
    assert len(bot) == 6 and all(c.outcome == "ok" for c in bot), bot
    assert {c.model for c in bot} == {pl.API_FALLBACK}
    assert max(c.seconds for c in bot) <= 2.5 / SCALE, [c.seconds for c in bot]
    fell_back = db.execute(
        "select count(*) from public.google_ai_reservations where caller = %s"
        " and model = %s and details #>> '{granted,fallback_from}' = %s",
        (pl.BOT, pl.FALLBACK, pl.MODEL),
    ).fetchone()
    assert fell_back == (6,)
    # The batch calls waiting when the bot came were all answered by 27b, after its slot freed.
    first = min(c.started for c in bot)
    in_line = [c for c in out.of(pl.BATCH) if c.started <= first < c.started + c.seconds]
    assert len(in_line) == 16 and {c.model for c in in_line} == {pl.API_MODEL}
    hold = (FALLBACK.window_ms + FALLBACK.guard_ms) / 1000
    assert all(c.started + c.seconds > out.started + hold for c in in_line)
    assert not [c for c in out.calls if c.caller == pl.BATCH and c.model == pl.API_FALLBACK]
