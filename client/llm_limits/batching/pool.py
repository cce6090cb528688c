"""The two statements a batch runs itself, besides the calls ``llm_limits.Client`` makes: how
much of the pool is left (``public.batch_outlook``, for the ETA) and what became of the calls
of a killed run (``public.request_outcomes``, for the resume).

Both run on one short-lived autocommit connection each time, with nothing prepared, so they
work through Supavisor's transaction pooler. A failure here never fails a batch: the ETA falls
back to the observed rate, and a call whose outcome cannot be read counts as maybe answered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

log = logging.getLogger("llm_limits")

OUTLOOK = (
    "select * from public.batch_outlook(model => %(model)s::text,"
    " key_aliases => %(key_aliases)s::text[], caller => %(caller)s::text)"
)
OUTCOMES = (
    "select request_id, may_have_answered"
    " from public.request_outcomes(request_ids => %(request_ids)s::text[])"
)
OUTCOMES_CHUNK = 1000  # request_outcomes takes at most this many ids at once


@dataclass(frozen=True)
class Outlook:
    """One ``public.batch_outlook`` row. A None limit is not enforced."""

    groups: int
    rpm_limit: int | None
    rpm_left: int | None
    tpm_limit: int | None
    tpm_left: int | None
    rpd_limit: int | None
    rpd_left: int | None
    window_ms: int
    cooldown_until: datetime | None
    next_rpd_reset: datetime | None
    waiters: int
    tokens_per_call: int | None
    read_at: datetime


class PoolReader:
    """Reads the outlook and call outcomes; ``url`` None reads nothing."""

    def __init__(self, url: str | None, connect_timeout: int = 5) -> None:
        self.url = url
        self._timeout = connect_timeout

    def _rows(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        assert self.url is not None
        with (
            psycopg.connect(
                self.url, autocommit=True, prepare_threshold=None, connect_timeout=self._timeout
            ) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            return cur.execute(sql, params).fetchall()

    def outlook(
        self, model: str, key_aliases: list[str] | None, caller: str | None
    ) -> Outlook | None:
        if self.url is None:
            return None
        try:
            rows = self._rows(
                OUTLOOK, {"model": model, "key_aliases": key_aliases, "caller": caller}
            )
        except psycopg.Error as exc:
            # Said once: the ETA goes on from the rate seen, without asking again.
            log.warning("batch: the pool's outlook could not be read (ETA from the rate): %s", exc)
            self.url = None
            return None
        row = rows[0]
        row.pop("resolved_model", None)
        return Outlook(**row, read_at=datetime.now(timezone.utc))

    def maybe_answered(self, request_ids: Iterable[str]) -> set[str] | None:
        """The request ids Google may have answered, or None when the ledger cannot be read."""
        ids = sorted(set(request_ids))
        if not ids:
            return set()
        if self.url is None:
            return None
        answered: set[str] = set()
        try:
            for start in range(0, len(ids), OUTCOMES_CHUNK):
                chunk = ids[start : start + OUTCOMES_CHUNK]
                for row in self._rows(OUTCOMES, {"request_ids": chunk}):
                    if row["may_have_answered"]:
                        answered.add(str(row["request_id"]))
        except psycopg.Error as exc:
            log.warning("batch: the ledger could not be read for the resume: %s", exc)
            return None
        return answered
