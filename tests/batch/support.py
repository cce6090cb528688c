"""Helpers of the batch tests that the gateway's batch tests share: a caller's daily budget, and
a run that must end within a bound (a run that slept on a refusal would not)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from llm_limits import BatchResult

from ..client.support import Conn


def set_caller_budget(db: Conn, caller: str, model: str, requests: int) -> None:
    db.execute(
        "insert into public.google_ai_caller_budgets (caller, model, requests) values (%s, %s, %s)"
        " on conflict (caller, model) do update set requests = excluded.requests",
        (caller, model, requests),
    )


def ended_within(run: Callable[[], list[BatchResult]], seconds: float) -> list[BatchResult]:
    """``run()``'s results; fails if it is still running after ``seconds``."""
    out: list[list[BatchResult]] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(run())
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the run was still going after {seconds}s"
    assert errors == []
    return out[0]
