"""The PNG that ``simulate`` writes: what a run spent per rolling window against its limit.

A run of short prompts is bound by RPM and draws grants per window against RPM; a run of long
prompts is bound by TPM and draws the input tokens of those grants per window against TPM.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

Metric = Literal["requests", "tokens"]
METRICS: tuple[Metric, ...] = ("requests", "tokens")
# Per metric: what a line counts, and the limit it is drawn against.
_WHAT = {"requests": ("grants", "RPM"), "tokens": ("input tokens", "TPM")}

Grant = tuple[float, int]  # (epoch seconds, input tokens Google counted for it)


def load_pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (the cli extra; imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rolling_totals(
    events: Sequence[tuple[float, int]], start: float, end: float, window_s: float, step: float
) -> tuple[list[float], list[int]]:
    """(x, y): for x every ``step`` s from 0, the sum of the weights of the events in
    (start + x - window, start + x]."""
    ordered = sorted(events)
    times = [t for t, _ in ordered]
    before = [0, *accumulate(w for _, w in ordered)]  # before[i]: weight of the first i events
    xs: list[float] = []
    ys: list[int] = []
    n = int((end - start) / step) + 1
    for i in range(n + 1):
        t = start + min(i * step, end - start)
        xs.append(t - start)
        ys.append(before[bisect_right(times, t)] - before[bisect_right(times, t - window_s)])
    return xs, ys


def series(
    grants: Sequence[Grant], metric: Metric, start: float, end: float, window_s: float, step: float
) -> tuple[list[float], list[int]]:
    """One group's line: grants (``requests``) or their input tokens (``tokens``) per window."""
    events = [(ts, 1 if metric == "requests" else tokens) for ts, tokens in grants]
    return rolling_totals(events, start, end, window_s, step)


def write_chart(
    path: Path,
    *,
    title: str,
    grants: Mapping[str, Sequence[Grant]],
    limits: Mapping[str, int | None],
    metric: Metric,
    start: float,
    end: float,
    window_s: float,
) -> Path:
    """One line per quota group and a dashed line at its limit (RPM or TPM); returns the path."""
    plt = load_pyplot()
    what, limit_name = _WHAT[metric]
    step = max(window_s / 200, 0.05)
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    peak = 1
    for i, group in enumerate(sorted(set(grants) | set(limits))):
        color = colors[i % len(colors)]
        xs, ys = series(grants.get(group, []), metric, start, end, window_s, step)
        # Thinner lines on top, so groups with identical traffic stay visible.
        width = max(3.5 - 1.2 * i, 1.0)
        ax.step(xs, ys, where="post", color=color, linewidth=width, label=f"{group}: {what}")
        limit = limits.get(group)
        peak = max(peak, *ys, limit or 0)
        if limit is not None:
            ax.axhline(
                limit, color=color, linestyle="--", linewidth=1, label=f"{group}: {limit_name}"
            )
    window = f"{window_s:g} s"
    ax.set_title(title)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(f"{what} in the last {window}")
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.set_ylim(0, peak * 1.15)
    ax.set_xlim(0, max(end - start, 1e-3))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path.resolve()
