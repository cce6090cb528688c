"""Conformance: every case of cases/*.json, carried by both carriers, ends in the same state.

The carriers are the Python client (``llm_limits.Client``, the real google-genai SDK to the
fake Gemini) and the llm-gateway (the real SDK to the gateway, run by Deno, to the fake). Each
case scripts the fake's next answers, makes one ``generate_content`` call through the carrier,
and checks what the caller saw and the database's end state: the ledger rows, the keys, the
cooldowns and the audit records. The cases are plain JSON (see README.md here), so a runner in
another language can take the same table.

Both carriers connect as their least-privilege role of supabase/roles.sql, hold keys a1
(project proj-a) and b1 (proj-b), count the prompt with Google's countTokens (so the estimate
is the fake's own count), make at most 3 attempts and give Google ``UPSTREAM_TIMEOUT_S``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.genai import errors as genai_errors
from psycopg import sql

from llm_limits import Client
from llm_limits.errors import NoKeyAvailable, RateLimited
from llm_limits.local.fake_gemini import SCRIPT_PATH, FakeGemini

from ..client.support import KEY_VALUES, KEYS, Conn, hold, insert_keys, projects
from ..gateway.harness import add_caller, launch, role_url

CASES = sorted((Path(__file__).parent / "cases").glob("*.json"))
MODEL = "gemma-3-27b-it"
PROMPT = (
    "Расскажи коротко, почему в Санкт-Петербурге летом белые ночи, и как к ним привыкают "
    "люди, которые приехали с юга."
)
HELD = ("a1", "b1")
MAX_ATTEMPTS = 3
UPSTREAM_TIMEOUT_S = 2.0
MAX_WAIT_S = 10
PACIFIC = ZoneInfo("America/Los_Angeles")

Outcome = str | dict[str, Any]
Carrier = Callable[[], Outcome]


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(projects()) as srv:
        yield srv


@pytest.fixture
def pool(db: Conn) -> Conn:
    insert_keys(db)
    db.execute("delete from public.google_ai_api_keys where key_alias <> all(%s)", (list(HELD),))
    # Both carriers count with countTokens upstream: the estimate is the fake's exact count.
    db.execute("update public.google_ai_model_limits set token_counter = 'count_tokens'")
    return db


def client_carrier(
    db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Carrier:
    hold(monkeypatch, *HELD)
    client = Client(
        role_url(db_url, "llm_limits_client"),
        base_url=fake.base_url,
        timeout=UPSTREAM_TIMEOUT_S,
        max_attempts=MAX_ATTEMPTS,
        caller="conformance",
    )

    def call() -> Outcome:
        with client:
            try:
                client.generate(MODEL, PROMPT, mode="WAIT", max_wait=MAX_WAIT_S)
            except genai_errors.APIError as err:
                return {"google": err.code}
            except RateLimited as err:
                return {"refused": err.reason}
            except NoKeyAvailable:
                return {"refused": "no_key"}
        return "ok"

    return call


def gateway_carrier(
    db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Carrier:
    token = add_caller(db, "conformance")
    settings = {
        "LLM_GATEWAY_TIMEOUT_MS": int(UPSTREAM_TIMEOUT_S * 1000),
        "LLM_GATEWAY_MAX_ATTEMPTS": MAX_ATTEMPTS,
    }
    gw = launch(db_url, fake.base_url, HELD, tmp_path / "gateway.log", **settings)
    sdk = gw.sdk(token, **{"x-llm-limits-max-wait": str(MAX_WAIT_S)})

    def call() -> Outcome:
        try:
            sdk.models.generate_content(model=MODEL, contents=PROMPT)
        except genai_errors.APIError as err:
            info = [
                d
                for d in (err.details or {}).get("error", {}).get("details", [])
                if d.get("domain") == "llm-limits"
            ]
            return {"refused": info[0]["reason"].lower()} if info else {"google": err.code}
        finally:
            sdk.close()
            gw.stop()
            log = gw.log()
            assert not any(v in log for v in [token, *KEY_VALUES]), "a secret reached a log"
        return "ok"

    return call


CARRIERS = {"client": client_carrier, "gateway": gateway_carrier}


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
@pytest.mark.parametrize("case_file", CASES, ids=lambda p: p.stem)
def test_case(
    case_file: Path,
    carrier: str,
    pool: Conn,
    db_url: str,
    fake: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    case = json.loads(case_file.read_text())
    for column, value in case.get("settings", {}).items():
        pool.execute(
            sql.SQL("update public.google_ai_settings set {} = %s").format(sql.Identifier(column)),
            (value,),
        )
    call = CARRIERS[carrier](pool, db_url, fake, monkeypatch, tmp_path)
    script(fake, case["upstream"])

    seen = call()

    assert seen == case["caller_sees"]
    assert fake.stats().requests == len(case["upstream"]), "Google was called otherwise"
    prompt = fake.counting.prompt([("user", [PROMPT])])
    rows = ledger(pool)
    # How a carrier counts before acquire is its own business, as long as it is an upper bound.
    assert all(row["estimated_tokens"] >= prompt for row in rows), rows
    reply = fake.counting.text("fake reply to: " + PROMPT[:40])
    assert len(rows) == len(case["ledger"]), rows
    for row, want in zip(rows, case["ledger"], strict=True):
        # $estimate: the row's own estimate (a call that failed after sending stays counted).
        symbols = {"$prompt": prompt, "$reply": reply, "$estimate": row["estimated_tokens"]}
        expected = {k: symbols.get(v, v) if isinstance(v, str) else v for k, v in want.items()}
        assert {k: row[k] for k in ("caller", *want)} == {"caller": "conformance", **expected}
    assert keys(pool) == {
        alias: {"active": True, "disabled_reason": None, **want}
        for alias, want in case["keys"].items()
    }
    assert cooldowns(pool) == {
        group: {"reason": want["reason"], "until": until(pool, group, want["until"])}
        for group, want in case["cooldowns"].items()
    }
    for event, want in case["audit"].items():
        records = audit(pool, event)
        assert len(records) == len(want), (event, records)
        for record, expected in zip(records, want, strict=True):
            assert {k: record.get(k) for k in expected} == expected, (event, record)


def script(fake: FakeGemini, answers: list[dict[str, Any]]) -> None:
    """The fake's next answers, over its control endpoint (as any runner would)."""
    req = urllib.request.Request(
        fake.base_url + SCRIPT_PATH,
        data=json.dumps({"answers": answers}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.loads(resp.read()) == {"scripted": len(answers)}


def ledger(db: Conn) -> list[dict[str, Any]]:
    cur = db.execute(
        "select key_alias, status, caller, counted_requests, counted_tokens, estimated_tokens, "
        "actual_tokens, completion_tokens from public.google_ai_reservations order by granted_at"
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def keys(db: Conn) -> dict[str, dict[str, Any]]:
    rows = db.execute(
        "select key_alias, is_active, disabled_reason from public.google_ai_api_keys"
    ).fetchall()
    return {alias: {"active": active, "disabled_reason": why} for alias, active, why in rows}


def cooldowns(db: Conn) -> dict[str, dict[str, Any]]:
    rows = db.execute(
        "select quota_group, cooldown_reason, cooldown_until from public.google_ai_quota_state "
        "where cooldown_until is not null"
    ).fetchall()
    return {group: {"reason": reason, "until": at} for group, reason, at in rows}


def until(db: Conn, group: str, rule: str | dict[str, int]) -> datetime:
    """When a cooldown of `group` must end: a fixed time after the settlement that started it
    (the group's last: a 429, or the failure that began an outage cooldown), or the next
    Pacific midnight after it."""
    row = db.execute(
        "select settled_at from public.google_ai_reservations "
        "where quota_group = %s and settled_at is not null order by settled_at desc limit 1",
        (group,),
    ).fetchone()
    assert row is not None, f"nothing was settled for {group}"
    settled: datetime = row[0]
    if rule == "next_pacific_midnight":
        local = settled.astimezone(PACIFIC)
        return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
    assert isinstance(rule, dict), rule
    return settled + timedelta(milliseconds=rule["ms_after_settle"])


def audit(db: Conn, event: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "select details from public.google_ai_audit_log where event = %s order by ts, id", (event,)
    ).fetchall()
    return [row[0] for row in rows]


def test_every_case_names_both_held_keys_and_a_known_shape() -> None:
    """The table itself: what the runner relies on."""
    assert len(CASES) >= 9
    for path in CASES:
        case = json.loads(path.read_text())
        assert set(case) - {"settings"} == {
            "description", "upstream", "caller_sees", "ledger", "keys", "cooldowns", "audit"
        }, path.name  # fmt: skip
        assert set(case["keys"]) == set(HELD) and set(HELD) <= set(KEYS), path.name
