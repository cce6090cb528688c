"""The llm-gateway end to end: Deno runs the Edge Function against a real migrated Postgres and
the fake Gemini, and the real google-genai SDK calls it over HTTP.

Each test gets its own database, fake and gateway process. The gateway holds the keys of
tests.client.support (a1, a2 in proj-a; b1 in proj-b) unless a test says otherwise. After every
test, the gateway's whole output and the fake's log are searched for key values and tokens.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types

from llm_limits.cli.gateway import (
    FUNCTION_DIR,
    free_port,
    new_token,
    start_local,
    token_digest,
)
from llm_limits.testing.fake_gemini import FakeGemini

from ..client.support import KEY_VALUES, KEYS, Conn, insert_keys, projects

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Gateway:
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    secrets: list[str] = field(default_factory=list)  # must never reach a log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sdk(self, token: str, **headers: str) -> genai.Client:
        options = types.HttpOptions(
            base_url=self.url,
            api_version="v1beta",
            timeout=30_000,
            headers=headers or None,
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=token, http_options=options)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


StartGateway = Callable[..., Gateway]


def add_caller(db: Conn, name: str, models: list[str] | None = None) -> str:
    token = new_token()
    db.execute(
        "select public.add_caller(%s::text, %s::bytea, %s::text[])",
        (name, token_digest(token), models),
    )
    return token


@pytest.fixture
def keyed_db(db: Conn) -> Conn:
    insert_keys(db)
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
        keys = {KEYS[alias][0]: KEYS[alias][2] for alias in held}
        settings = {"LLM_GATEWAY_BACKOFF_MS": "0", **{k: str(v) for k, v in env.items()}}
        port = free_port()
        log_path = tmp_path / f"gateway-{len(started)}.log"
        with log_path.open("wb") as out:
            proc = start_local(
                ROOT / FUNCTION_DIR,
                db_url,
                port=port,
                google_base_url=(google or fake).base_url,
                extra_env={**keys, **settings},
                output=out.fileno(),
            )
        gw = Gateway(f"http://127.0.0.1:{port}", log_path, proc)
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
