"""Shared helpers of the client tests: the key pool and readers of the ledger and audit log.

Three keys in two Google projects: a1 and a2 share project (quota group) proj-a, b1 is alone
in proj-b. The key values are long and distinctive so a leak is easy to grep for.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

KEYS = {
    "a1": ("LLT_KEY_A1", "proj-a", "AIzaFAKEa1-7b1d0c9e4f2a4e7d9c3b5a1f"),
    "a2": ("LLT_KEY_A2", "proj-a", "AIzaFAKEa2-2c8e6b4d1a9f4c3e8b7d6a5c"),
    "b1": ("LLT_KEY_B1", "proj-b", "AIzaFAKEb1-9f3a7c5e2b8d4f1a6c9e3b7d"),
}
KEY_VALUES = [value for _, _, value in KEYS.values()]
GEMMA = "gemma-3-27b"

Conn = psycopg.Connection[tuple[Any, ...]]


def projects() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, group, value in KEYS.values():
        out.setdefault(group, []).append(value)
    return out


def insert_keys(db: Conn) -> None:
    for alias, (var, group, _) in KEYS.items():
        db.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values (%s, %s, %s)",
            (alias, var, group),
        )


def hold(monkeypatch: pytest.MonkeyPatch, *aliases: str) -> None:
    """Put exactly these keys in the environment (and none of the others)."""
    for alias, (var, _, value) in KEYS.items():
        if alias in aliases:
            monkeypatch.setenv(var, value)
        else:
            monkeypatch.delenv(var, raising=False)


def reservations(db: Conn) -> list[dict[str, Any]]:
    cur = db.execute(
        "select key_alias, quota_group, status, estimated_tokens, actual_tokens, "
        "completion_tokens, counted_requests, counted_tokens from public.google_ai_reservations "
        "order by granted_at"
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def audit(db: Conn, event: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "select details from public.google_ai_audit_log where event = %s order by ts, id", (event,)
    ).fetchall()
    return [row[0] for row in rows]


def set_gemma_limits(db: Conn, rpm: int | None = 30, tpm: int | None = 15000) -> None:
    db.execute(
        "update public.google_ai_model_limits set rpm = %s, tpm = %s where model = %s",
        (rpm, tpm, GEMMA),
    )


def set_window(db: Conn, window_ms: int, guard_ms: int) -> None:
    db.execute(
        "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
        (window_ms, guard_ms),
    )
