"""The progress bar: tqdm (what Kaggle users know; ``tqdm.auto`` draws a widget in a notebook
and text elsewhere), with the ETA of ``eta`` in place of tqdm's own and what is left of the
pool beside it. tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .eta import Rate, combined_eta, quota_eta
from .pool import Outlook
from .result import BatchResult

# tqdm puts ", " before a postfix: "[01:02, 2.1it/s, ETA 4m10s · pool left 27/30 rpm, ...]".
BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


@dataclass(frozen=True)
class Progress:
    """What ``on_progress`` receives after each item (and what the bar shows)."""

    done: int  # items with an outcome, resumed ones included
    total: int
    ok: int
    failed: int  # failed, invalid and lost
    eta_s: float | None
    outlook: Outlook | None


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{m:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _left(left: int | None, limit: int | None, unit: str) -> str | None:
    if left is None or limit is None:
        return None
    return f"{left:,}/{limit:,} {unit}"


def describe(eta_s: float | None, outlook: Outlook | None) -> str:
    """The bar's postfix: ``ETA 4m10s · pool left 27/30 rpm, 14,100/14,400 rpd``."""
    parts = [f"ETA {'?' if eta_s is None else fmt_duration(eta_s)}"]
    if outlook is not None:
        left = [
            s
            for s in (
                _left(outlook.rpm_left, outlook.rpm_limit, "rpm"),
                _left(outlook.rpd_left, outlook.rpd_limit, "rpd"),
            )
            if s
        ]
        if left:
            parts.append("pool left " + ", ".join(left))
        if outlook.cooldown_until is not None:
            parts.append("cooling down")
    return " · ".join(parts)


class ProgressView:
    """Counts outcomes, keeps the ETA, and drives the bar and ``on_progress`` (thread-safe)."""

    def __init__(
        self,
        total: int,
        settled: list[BatchResult],
        *,
        show: bool,
        desc: str,
        on_progress: Callable[[Progress], object] | None,
        refresh_s: float,
    ) -> None:
        self.total, self.refresh_s = total, refresh_s
        self.done = self.ok = self.failed = 0
        self._on_progress = on_progress
        self._rate = Rate()
        self._outlook: Outlook | None = None
        self._outlook_at = -float("inf")
        self._lock = threading.Lock()
        for result in settled:  # known before the run: the checkpoint's and the bad input's
            self._add(result)
        self._bar: Any = None
        if show:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=self.done, desc=desc, bar_format=BAR_FORMAT,
                dynamic_ncols=True,
            )  # fmt: skip

    def _add(self, result: BatchResult) -> None:
        self.done += 1
        self.ok += result.status == "ok"
        self.failed += result.status in ("failed", "invalid", "lost")

    def count(self, result: BatchResult) -> None:
        """One item of this run has its outcome."""
        with self._lock:
            self._add(result)
            self._rate.tick(time.monotonic())
            if self._bar is not None:
                self._bar.update(1)
            snapshot = self._snapshot()
            if self._bar is not None:
                self._bar.set_postfix_str(describe(snapshot.eta_s, snapshot.outlook), refresh=False)
        if self._on_progress is not None:
            self._on_progress(snapshot)

    def outlook_due(self) -> bool:
        return time.monotonic() - self._outlook_at >= self.refresh_s

    def set_outlook(self, outlook: Outlook | None) -> None:
        with self._lock:
            self._outlook, self._outlook_at = outlook, time.monotonic()
            if self._bar is not None:
                snapshot = self._snapshot()
                self._bar.set_postfix_str(describe(snapshot.eta_s, snapshot.outlook))

    def _snapshot(self) -> Progress:
        left = self.total - self.done
        quota_s = None
        if self._outlook is not None:
            quota_s = quota_eta(left, self._outlook, datetime.now(timezone.utc))
        eta_s = combined_eta(left, quota_s, self._rate.per_second())
        return Progress(self.done, self.total, self.ok, self.failed, eta_s, self._outlook)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
