"""The PNG that ``simulate`` writes: grants per rolling window against each group's limit."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from pathlib import Path


def rolling_counts(
    times: list[float], start: float, end: float, window_s: float, step: float
) -> tuple[list[float], list[int]]:
    """(x, y): for x every ``step`` s from 0, the grants in (start + x - window, start + x]."""
    ordered = sorted(times)
    xs: list[float] = []
    ys: list[int] = []
    n = int((end - start) / step) + 1
    for i in range(n + 1):
        t = start + min(i * step, end - start)
        xs.append(t - start)
        ys.append(bisect_right(ordered, t) - bisect_right(ordered, t - window_s))
    return xs, ys


def write_chart(
    path: Path,
    *,
    title: str,
    grants: Mapping[str, list[float]],
    limits: Mapping[str, int | None],
    start: float,
    end: float,
    window_s: float,
) -> Path:
    """Draw one line per quota group and a dashed line at its RPM limit; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(window_s / 200, 0.05)
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    peak = 1
    for i, group in enumerate(sorted(set(grants) | set(limits))):
        color = colors[i % len(colors)]
        xs, ys = rolling_counts(grants.get(group, []), start, end, window_s, step)
        # Thinner lines on top, so groups with identical traffic stay visible.
        width = max(3.5 - 1.2 * i, 1.0)
        ax.step(xs, ys, where="post", color=color, linewidth=width, label=f"{group}: grants")
        limit = limits.get(group)
        peak = max(peak, *ys, limit or 0)
        if limit is not None:
            ax.axhline(limit, color=color, linestyle="--", linewidth=1, label=f"{group}: limit")
    window = f"{window_s:g} s"
    ax.set_title(title)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(f"grants in the last {window}")
    ax.set_ylim(0, peak * 1.15)
    ax.set_xlim(0, max(end - start, 1e-3))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path.resolve()
