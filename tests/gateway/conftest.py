"""The llm-gateway end to end: Deno runs the Edge Function against a real migrated Postgres, as
the least-privilege role `llm_limits_gateway`, and the fake Gemini; the real google-genai SDK
calls it over HTTP.

Each test gets its own database, fake and gateway process. The gateway holds the keys of
tests.client.support (a1, a2 in proj-a; b1 in proj-b) unless a test says otherwise. After every
test, the gateway's whole output and the fake's log are searched for key values and tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_limits.local.fake_gemini import FakeGemini

from ..client.support import KEY_VALUES, Conn, insert_keys, projects
from .harness import Gateway, launch

StartGateway = Callable[..., Gateway]


@pytest.fixture
def keyed_db(db: Conn) -> Conn:
    insert_keys(db)
    # settle's pause before another attempt after a 5xx or a timeout: none in these tests.
    db.execute("update public.google_ai_settings set retry_backoff_ms = 0")
    return db


@pytest.fixture
def fake_lines() -> list[str]:
    return []


@pytest.fixture
def fake(fake_lines: list[str]) -> Iterator[FakeGemini]:
    with FakeGemini(projects(), log=fake_lines.append) as srv:
        yield srv


@pytest.fixture
def start_gateway(
    keyed_db: Conn, db_url: str, fake: FakeGemini, tmp_path: Path, fake_lines: list[str]
) -> Iterator[StartGateway]:
    started: list[Gateway] = []

    def start(
        held: tuple[str, ...] = ("a1", "a2", "b1"), google: FakeGemini | None = None, **env: Any
    ) -> Gateway:
        log_path = tmp_path / f"gateway-{len(started)}.log"
        gw = launch(db_url, (google or fake).base_url, held, log_path, **env)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
    for gw in started:
        text = gw.log() + "\n".join(fake_lines)
        for secret in [*KEY_VALUES, *gw.secrets]:
            assert secret not in text, "a key value or caller token reached a log"


def ledger(db: Conn) -> list[dict[str, Any]]:
    cur = db.execute(
        "select key_alias, quota_group, status, caller, estimated_tokens, actual_tokens, "
        "completion_tokens, request_id from public.google_ai_reservations order by granted_at"
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def audit(db: Conn, event: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "select details from public.google_ai_audit_log where event = %s order by id", (event,)
    ).fetchall()
    return [row[0] for row in rows]
