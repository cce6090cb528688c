"""A Google outage does not burn the window (llm_limits.testing.outage_load).

Tried as a user would: twelve callers of ``Client.generate(..., mode="WAIT")`` through the real
SDK at the fake Gemini, 60 RPM, Google answering 503 for a while at the start of a window.
Without outage cooldowns every slot of that window went to failed attempts. Time is scaled down
fivefold: a 12 s window instead of 60 s (60 per window), a 3.4 s outage instead of 17 s, the
first cooldown 0.2 s and the longest 1.6 s instead of 1 s and 8 s, settle's pause 0.1 s.

* at most 24 slots go to failed attempts (the first wave, then one probe per cooldown), and
  Google sees no 429;
* every caller whose patience outlasts the outage by the longest cooldown (the most a probe
  can come late) is answered, after the outage; the others are refused by the pool without
  spending more;
* each cooldown is audited, the first after outage_after_failures failures, each probe's twice
  as long as the last, at most outage_cooldown_max_ms; the end once.

The full-size figures (60 s window, 17 s outage) are in ``make bench`` (bench/outage.py).
"""

from __future__ import annotations

from llm_limits.testing import outage_load

from .support import Conn

WINDOW_MS, GUARD_MS, RPM = 12_000, 200, 60
OUTAGE_S = 3.4
BREAKER = outage_load.Breaker(
    after_failures=3, cooldown_ms=200, cooldown_max_ms=1600, retry_backoff_ms=100
)
PATIENT, IMPATIENT = 8.0, 1.0  # outage + longest cooldown + 3 s; well inside the outage


def test_an_outage_costs_a_few_slots_and_the_patient_are_answered_after_it(
    db: Conn, db_url: str
) -> None:
    patience = [PATIENT] * 10 + [IMPATIENT] * 2
    out = outage_load.run(
        db, db_url, window_ms=WINDOW_MS, guard_ms=GUARD_MS, rpm=RPM, outage_s=OUTAGE_S,
        patience=patience, breaker=BREAKER,
    )  # fmt: skip

    assert out.errors == []
    assert out.failed_attempts <= 24, out
    assert out.google_429s == 0
    patient = [c for c in out.callers if c.patience == PATIENT]
    assert len(patient) == 10
    assert all(c.answered_at is not None and c.answered_at >= OUTAGE_S for c in patient), patient
    impatient = [c for c in out.callers if c.patience == IMPATIENT]
    assert all(c.answered_at is None and c.refused is not None for c in impatient), impatient
    assert out.answered_calls == 10

    first, *probes = out.cooldowns
    assert (first["failures_in_a_row"], first["cooldown_ms"], first["probe"]) == (3, 200, False)
    assert probes, "the outage outlasts the first cooldown: probes must have failed"
    grown = [c["cooldown_ms"] for c in probes]
    assert all(c["probe"] for c in probes)
    assert grown == [min(200 * 2**n, 1600) for n in range(1, len(grown) + 1)], grown
    # Once cooling down, only probes reach Google: every failure after the first wave is one.
    first_wave = out.failed_attempts - len(probes)
    assert first_wave <= len(patience), out
    [ended] = out.ended
    assert ended["answer"] == "http 200"
