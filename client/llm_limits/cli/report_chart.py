"""The PNG that ``report`` writes: per bucket, the grants, the refusals of our own and Google's
429s, side by side (the same matplotlib set-up as ``simulate``'s chart)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SERIES = (
    ("requests", "grants"),
    ("refusals", "refusals (ours)"),
    ("google_429s", "429s (Google)"),
)


def write_report_chart(path: Path, rows: Sequence[Mapping[str, Any]], *, title: str) -> Path:
    """One group of bars per bucket; a log scale when the counts span orders of magnitude."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    buckets = [str(r["bucket"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, min(0.6 * len(buckets) + 3, 24.0)), 5), dpi=100)
    width = 0.8 / len(SERIES)
    peak = 1
    for i, (column, label) in enumerate(SERIES):
        values = [int(r[column] or 0) for r in rows]
        peak = max(peak, *values) if values else peak
        xs = [x + (i - (len(SERIES) - 1) / 2) * width for x in range(len(buckets))]
        ax.bar(xs, values, width=width, label=label)
    low = min((int(r["requests"] or 0) for r in rows if r["requests"]), default=1)
    if peak / max(low, 1) > 100:
        ax.set_yscale("symlog")
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels(buckets, rotation=30 if len(buckets) > 4 else 0, ha="right")
    ax.set_title(title)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path.resolve()
