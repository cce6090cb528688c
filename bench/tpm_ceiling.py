"""The share of TPM a WAIT line can use at best, under each admission rule: a model, not a
measurement, run beside `bench.tokens` to say what its figure can reach.

One quota group: a rolling window that holds each grant's tokens for `hold` seconds (the
window plus its guard), `tpm` tokens in it; `callers` callers, each asking again `latency`
seconds after its grant, with a prompt drawn from `sizes`. Whenever the window has room, a
rule picks who goes:

- in order: only the head of the line;
- backfill (acquire's rule): the head if it fits; else a waiter behind it when there is room
  for it and everyone ahead of it, or when it fits now and the tokens that must leave the
  window for the head to fit leave no later with this one counted in;
- best fit: the largest waiting request that fits, order ignored (no rule a fair line keeps).

The share is the tokens granted per `window` seconds over TPM, as Google sees it: the guard
part of each hold is lost whatever the rule.

    python -m bench.tpm_ceiling
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Line = list[int]  # waiting requests' tokens, head first
Window = list[tuple[float, int]]  # (granted at, tokens), oldest first
Rule = Callable[[Line, Window, float, int], "int | None"]


@dataclass(frozen=True)
class Setting:
    tpm: int = 15_000
    window: float = 10.0
    hold: float = 10.3
    callers: int = 6
    latency: float = 0.3


def _leaves_by(window: Window, hold: float, tokens: int) -> float:
    """When `tokens` tokens have left the window (its grants leave oldest first)."""
    gone = 0
    for granted, size in window:
        gone += size
        if gone >= tokens:
            return granted + hold
    return float("inf")


def in_order(line: Line, window: Window, hold: float, room: int) -> int | None:
    return 0 if line[0] <= room else None


def backfill(line: Line, window: Window, hold: float, room: int) -> int | None:
    if line[0] <= room:
        return 0
    short = line[0] - room  # tokens that must leave before the head fits
    head_fits = _leaves_by(window, hold, short)
    for i in range(1, len(line)):
        if sum(line[: i + 1]) <= room:
            return i
        if line[i] <= room and _leaves_by(window, hold, short + line[i]) <= head_fits:
            return i
    return None


def best_fit(line: Line, window: Window, hold: float, room: int) -> int | None:
    fitting = [i for i, size in enumerate(line) if size <= room]
    return max(fitting, key=lambda i: line[i]) if fitting else None


RULES: dict[str, Rule] = {"in order": in_order, "backfill": backfill, "best fit": best_fit}


def share(rule: Rule, sizes: Sequence[int], s: Setting, seconds: float, seed: int) -> float:
    """Tokens granted per window over TPM, after one hold of warm-up."""
    draw = random.Random(seed).choice
    line: Line = [draw(sizes) for _ in range(s.callers)]
    window: Window = []
    comebacks: list[float] = []
    now, granted = 0.0, 0
    while now < seconds:
        while window and window[0][0] + s.hold <= now:
            window.pop(0)
        room = s.tpm - sum(size for _, size in window)
        while line and (pick := rule(line, window, s.hold, room)) is not None:
            size = line.pop(pick)
            window.append((now, size))
            room -= size
            granted += size if now >= s.hold else 0
            heapq.heappush(comebacks, now + s.latency)
        now = min(
            window[0][0] + s.hold if window else seconds,
            comebacks[0] if comebacks else seconds,
        )
        while comebacks and comebacks[0] <= now:
            heapq.heappop(comebacks)
            line.append(draw(sizes))
    return granted / (s.tpm * (seconds - s.hold) / s.window)


def ceilings(
    sizes: Sequence[int], s: Setting = Setting(), seconds: float = 3_000.0, seeds: int = 3
) -> dict[str, float]:
    """Each rule's mean share over `seeds` runs of `seconds`."""
    return {
        name: sum(share(rule, sizes, s, seconds, seed) for seed in range(seeds)) / seeds
        for name, rule in RULES.items()
    }


def main() -> None:
    sizes = range(1_500, 6_501)  # bench.tokens' prompts: 1,500-6,500 tokens
    for guard in (0.3, 0.1, 0.0):
        found = ceilings(sizes, Setting(hold=10.0 + guard))
        print(f"guard {guard:.1f} s: " + ", ".join(f"{k} {v:.1%}" for k, v in found.items()))


if __name__ == "__main__":
    main()
