"""How long the items left will take: from the pool's quota, and from the rate seen so far.

The quota bound: the pool admits ``rpm_limit`` calls per window (fewer when TPM binds first:
``tpm_limit / tokens_per_call``), ``rpm_left`` of them right now, and at most ``rpd_left`` more
today; past that the rest waits for the next RPD reset (Pacific midnight) and goes on at the
same pace, a day's quota at a time. Other callers share the pool, and calls take time, so the
rate actually seen can be slower: the ETA is the larger of the two. Before anything is done,
or when the database cannot be read (the gateway route without a database URL), only one of
them is known.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from .pool import Outlook

DAY_S = 86_400.0


def _fits(left: int | None, per_call: int | None) -> float:
    """How many calls a budget of ``left`` admits (inf when unenforced)."""
    if left is None:
        return math.inf
    if not per_call:
        return math.inf if left > 0 else 0.0
    return float(left // per_call)


def quota_eta(left: int, outlook: Outlook, now: datetime) -> float | None:
    """Seconds until ``left`` more calls fit in the pool, or None when no limit binds."""
    if left <= 0:
        return 0.0
    if outlook.groups == 0:
        return None
    tokens = outlook.tokens_per_call
    per_window = min(_fits(outlook.rpm_limit, 1), _fits(outlook.tpm_limit, tokens))
    now_calls = min(_fits(outlook.rpm_left, 1), _fits(outlook.tpm_left, tokens))
    window_s = outlook.window_ms / 1000
    cooling = 0.0
    if outlook.cooldown_until is not None:
        cooling = max(0.0, (outlook.cooldown_until - now).total_seconds())
    if math.isinf(per_window):
        minute_s = 0.0
    elif per_window == 0:
        return None  # a limit of 0: nothing will ever be admitted
    else:
        minute_s = max(0.0, left - now_calls) / per_window * window_s
    eta = cooling + minute_s
    if outlook.rpd_left is None or left <= outlook.rpd_left:
        return eta
    # Today's quota runs out first: the rest starts after the reset, a day's quota at a time.
    if not outlook.rpd_limit or outlook.next_rpd_reset is None:
        return None
    after_reset = left - outlook.rpd_left
    to_reset = max(0.0, (outlook.next_rpd_reset - now).total_seconds())
    whole_days = (after_reset - 1) // outlook.rpd_limit
    last_day = after_reset - whole_days * outlook.rpd_limit
    last_day_s = 0.0 if math.isinf(per_window) else last_day / per_window * window_s
    return max(eta, to_reset) + whole_days * DAY_S + last_day_s


class Rate:
    """Items finished per second over the last ``span`` finishes (bounded memory)."""

    def __init__(self, span: int = 200) -> None:
        self._times: deque[float] = deque(maxlen=span)

    def tick(self, at: float) -> None:
        self._times.append(at)

    def per_second(self) -> float | None:
        if len(self._times) < 5:
            return None
        spent = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / spent if spent > 0 else None


def combined_eta(left: int, quota_s: float | None, rate: float | None) -> float | None:
    """The larger of the quota bound and the observed pace, whichever are known."""
    if left <= 0:
        return 0.0
    seen_s = left / rate if rate else None
    known = [s for s in (quota_s, seen_s) if s is not None]
    return max(known) if known else None
