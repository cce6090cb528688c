"""One call end to end: real Postgres, the real google-genai SDK, the fake Gemini over HTTP."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from google.genai import errors, types

import llm_limits
from llm_limits import Client, Usage
from llm_limits.local.fake_gemini import FakeGemini
from llm_limits.local.prose import page

from .support import (
    GEMMA,
    KEYS,
    Conn,
    audit,
    hold,
    projects,
    reservations,
    set_gemma_limits,
    set_window,
)


def test_success_commits_the_actual_tokens(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    seen: list[Usage] = []
    client.on_usage = seen.append
    prompt = "How many tokens is this prompt?"

    resp = client.generate(GEMMA, prompt, caller="bot", request_id="msg-1")

    assert resp.text == "fake reply to: " + prompt
    assert isinstance(resp, types.GenerateContentResponse)
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count == fake.counting.prompt(
        [("user", [prompt])]
    )
    [res] = reservations(keyed_db)
    assert res["status"] == "committed"
    assert res["actual_tokens"] == res["counted_tokens"] == usage.prompt_token_count
    assert res["estimated_tokens"] >= usage.prompt_token_count
    assert res["completion_tokens"] == usage.candidates_token_count
    row = keyed_db.execute(
        "select model, prompt_tokens, completion_tokens, total_tokens, request_id, meta "
        "from public.token_usage"
    ).fetchone()
    assert row is not None
    model, prompt_tokens, completion_tokens, total, request_id, meta = row
    assert (model, prompt_tokens, request_id) == (
        "gemma-3-27b-it",
        usage.prompt_token_count,
        "msg-1",
    )
    assert total == prompt_tokens + completion_tokens
    assert meta["key_alias"] == res["key_alias"]
    assert meta["model_version"] == "gemma-3-27b-it"
    assert meta["finish_reason"] == "STOP"
    assert meta["caller"] == "bot"
    assert seen == [
        Usage(
            model="gemma-3-27b-it",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=total,
            request_id="msg-1",
            key_alias=res["key_alias"],
            reservation_id=meta["reservation_id"],
        )
    ]


def test_429_is_reported_and_the_retry_uses_another_group(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    fake.inject(429)

    resp = client.generate(GEMMA, "hello", mode="NO_WAIT")

    assert resp.text
    first, second = reservations(keyed_db)
    assert first["status"] == "rate_limited"
    assert second["status"] == "committed"
    assert first["quota_group"] != second["quota_group"]
    [limited] = audit(keyed_db, "rate_limited")
    assert limited["quota_id"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert limited["retry_delay_ms"] == 1000
    cooldown = keyed_db.execute(
        "select cooldown_until > clock_timestamp() from public.google_ai_quota_state "
        "where quota_group = %s",
        (first["quota_group"],),
    ).fetchone()
    assert cooldown == (True,)
    stats = fake.stats()
    assert (stats.requests, stats.rate_limited, stats.ok) == (2, 1, 1)


def test_429_with_no_other_group_is_a_refusal(
    client: Client, keyed_db: Conn, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold(monkeypatch, "b1")
    fake.inject(429)

    with pytest.raises(llm_limits.RateLimited) as info:
        client.generate(GEMMA, "hello", mode="NO_WAIT")

    assert info.value.reason == "cooldown"
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 1.0
    assert isinstance(info.value.__cause__, errors.ClientError)
    assert fake.stats().requests == 1


def test_503_then_success(client: Client, keyed_db: Conn, fake: FakeGemini) -> None:
    fake.inject(503)

    assert client.generate(GEMMA, "hello").text

    first, second = reservations(keyed_db)
    assert first["status"] == "released" and first["counted_requests"] == 1  # it was sent
    assert second["status"] == "committed"
    [released] = audit(keyed_db, "released")
    assert released["sent"] is True and released["reason"] == "http 503"
    assert fake.stats().requests == 2


def test_three_503s_raise_the_sdk_error_after_three_attempts(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    fake.inject(503, count=3)

    with pytest.raises(errors.ServerError) as info:
        client.generate(GEMMA, "hello")

    assert info.value.code == 503
    assert fake.stats().requests == 3
    rows = reservations(keyed_db)
    assert len(rows) == 3
    assert {r["status"] for r in rows} == {"released"}


def test_timeout_is_released_as_sent_and_retried(
    keyed_db: Conn, db_url: str, fake: FakeGemini
) -> None:
    fake.hang(2.0)
    with Client(db_url, base_url=fake.base_url, timeout=0.3) as client:
        assert client.generate(GEMMA, "hello").text

    first, second = reservations(keyed_db)
    assert (first["status"], first["counted_requests"]) == ("released", 1)
    assert second["status"] == "committed"
    assert audit(keyed_db, "released")[0]["reason"] == "timeout"


def test_no_wait_refusal_raises_rate_limited(client: Client, keyed_db: Conn) -> None:
    set_gemma_limits(keyed_db, rpm=1)
    client.generate(GEMMA, "one", mode="NO_WAIT")
    client.generate(GEMMA, "two", mode="NO_WAIT")  # the second group

    with pytest.raises(llm_limits.RateLimited) as info:
        client.generate(GEMMA, "three", mode="NO_WAIT")

    assert info.value.reason == "rpm"
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 61.0
    assert len(reservations(keyed_db)) == 2


def test_wait_is_granted_when_the_window_frees(client: Client, keyed_db: Conn) -> None:
    set_window(keyed_db, 1000, 0)
    set_gemma_limits(keyed_db, rpm=1)
    client.generate(GEMMA, "one")
    client.generate(GEMMA, "two")

    assert client.generate(GEMMA, "three", mode="WAIT", max_wait=5.0).text

    assert [r["status"] for r in reservations(keyed_db)] == ["committed"] * 3
    # Granted once the first grant left the 1 s window, not before; how soon after is
    # measured by `make bench` (bench/client_waits.py).
    rows = keyed_db.execute(
        "select granted_at from public.google_ai_reservations order by granted_at"
    ).fetchall()
    first, _, third = [row[0] for row in rows]
    assert third >= first + timedelta(seconds=1)


def test_wait_timeout_raises_rate_limited(client: Client, keyed_db: Conn) -> None:
    set_gemma_limits(keyed_db, rpm=1)
    client.generate(GEMMA, "one")
    client.generate(GEMMA, "two")

    with pytest.raises(llm_limits.RateLimited) as info:
        client.generate(GEMMA, "three", mode="WAIT", max_wait=0.3)

    assert info.value.reason == "wait_timeout"
    assert info.value.retry_after is not None and info.value.retry_after > 0
    # The database was asked to wait no longer than the caller's 0.3 s (how long the call
    # took is measured by `make bench`). The refusal keeps the last call's max_wait_ms: what
    # was left of the 0.3 s, 0 when that call came at the caller's deadline.
    refusals = [d for d in audit(keyed_db, "refused") if d["reason"] == "wait_timeout"]
    assert refusals and all(
        d["mode"] == "WAIT" and 0 <= d["max_wait_ms"] <= 300 for d in refusals
    ), refusals


def test_max_wait_counts_from_the_call_not_from_its_first_acquire(
    client: Client, keyed_db: Conn
) -> None:
    """A first call counts its prompt before it asks the database (in the field a tokenizer's
    first load fetches its model); that time is waited out of max_wait, not added to it."""
    set_gemma_limits(keyed_db, rpm=1)
    client.generate(GEMMA, "one")
    client.generate(GEMMA, "two")  # both groups' minute spent
    count_locally = client.tokens.local

    def slow_first_count(*args: Any) -> Any:
        time.sleep(0.6)
        return count_locally(*args)

    client.tokens.local = slow_first_count  # type: ignore[method-assign]
    with pytest.raises(llm_limits.RateLimited) as info:
        client.generate(GEMMA, "three", mode="WAIT", max_wait=0.5, request_id="late")

    # The 0.5 s were gone before the first acquire: it asked for no wait, so it was refused
    # with the binding limit at once (a slot freeing would have been granted by that one try).
    assert info.value.reason == "rpm", info.value
    refused = [d for d in audit(keyed_db, "refused") if d.get("request_id") == "late"]
    assert [(d["mode"], d["max_wait_ms"]) for d in refused] == [("WAIT", 0)], refused


def test_a_wait_is_not_slept_past_its_horizon(client: Client, keyed_db: Conn) -> None:
    keyed_db.execute("update public.google_ai_model_limits set rpd = 1 where model = %s", (GEMMA,))
    client.generate(GEMMA, "one")
    client.generate(GEMMA, "two")  # the second group: the day is spent in both
    outcome: list[BaseException] = []

    def day_long_wait() -> None:
        try:
            client.generate(GEMMA, "three", mode="WAIT", max_wait=86_400.0, horizon=5.0)
        except BaseException as exc:  # the assertions below read it
            outcome.append(exc)

    # Within a day's wait the day's end is in reach: the database says to sleep until it.
    # Past the 5 s horizon, the client asks once more looking 5 s ahead, and the database
    # refuses with the limit (a thread, so that a client sleeping hours fails, not hangs).
    waiter = threading.Thread(target=day_long_wait, daemon=True)
    waiter.start()
    waiter.join(30)
    assert not waiter.is_alive(), "the client slept towards the day's end"
    [refusal] = outcome
    assert isinstance(refusal, llm_limits.RateLimited) and refusal.reason == "rpd"
    assert refusal.retry_after is not None and refusal.retry_after > 5.0
    # One wait, one ticket: its final call looked 5 s ahead and was refused once.
    refused = audit(keyed_db, "refused")
    assert [(d["reason"], d["max_wait_ms"]) for d in refused] == [("rpd", 5000)], refused


def test_prompt_larger_than_tpm_is_prompt_too_large(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    prompt = page(60_000)  # Russian: about 17,000 tokens, over gemma-3-27b's TPM of 15,000
    assert fake.counting.prompt([("user", [prompt])]) > 15_000
    with pytest.raises(llm_limits.RpcError) as info:
        client.generate(GEMMA, prompt)

    assert info.value.sqlstate == "LL003"
    assert fake.stats().requests == 0
    assert reservations(keyed_db) == []


@pytest.mark.parametrize(
    ("kwargs", "sqlstate"),
    [
        ({"model": "no-such-model"}, "LL001"),
        ({"mode": "SOMETIMES"}, "LL004"),
        ({"caller": "c" * 300}, "LL007"),
    ],
)
def test_rpc_errors_carry_their_sqlstate(
    client: Client, fake: FakeGemini, kwargs: dict[str, str], sqlstate: str
) -> None:
    args = {"model": GEMMA, **kwargs}
    with pytest.raises(llm_limits.RpcError) as info:
        client.generate(args.pop("model"), "hello", **args)  # type: ignore[arg-type]
    assert info.value.sqlstate == sqlstate
    assert fake.stats().requests == 0


def test_no_key_held_raises_without_calling_google(
    client: Client, keyed_db: Conn, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold(monkeypatch)

    with pytest.raises(llm_limits.NoKeyAvailable):
        client.generate(GEMMA, "hello")

    assert fake.stats().requests == 0
    assert reservations(keyed_db) == []


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [("invalid_keys", 400, "API_KEY_INVALID"), ("leaked_keys", 403, "API_KEY_LEAKED")],
)
def test_a_rejected_key_is_disabled(
    keyed_db: Conn,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    status: int,
    reason: str,
) -> None:
    hold(monkeypatch, "a1")
    with (
        FakeGemini(projects(), **{kind: [KEYS["a1"][2]]}) as srv,  # type: ignore[arg-type]
        Client(db_url, base_url=srv.base_url) as client,
    ):
        with pytest.raises(errors.ClientError) as info:
            client.generate(GEMMA, "hello")
        assert srv.stats().requests == 1  # a permanent error is not retried
        with pytest.raises(llm_limits.NoKeyAvailable):
            client.generate(GEMMA, "hello")  # the key is gone from this process too

    assert info.value.code == status
    row = keyed_db.execute(
        "select is_active, disabled_reason from public.google_ai_api_keys where key_alias = 'a1'"
    ).fetchone()
    assert row == (False, reason)
    [res] = reservations(keyed_db)
    assert (res["status"], res["counted_requests"]) == ("released", 1)


def test_other_4xx_is_raised_at_once(client: Client, keyed_db: Conn, fake: FakeGemini) -> None:
    keyed_db.execute(
        "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) "
        "values ('gemini-9-imaginary', 'gemini-9-imaginary', 10, 1000, 100)"
    )
    with pytest.raises(errors.ClientError) as info:
        client.generate("gemini-9-imaginary", "hello")

    assert info.value.code == 404
    assert fake.stats().requests == 1
    assert [r["status"] for r in reservations(keyed_db)] == ["released"]
    assert keyed_db.execute(
        "select count(*) from public.google_ai_api_keys where is_active"
    ).fetchone() == (3,)


def test_gemma_system_instruction_is_folded_into_the_first_user_turn(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    system = "You are terse."
    config = types.GenerateContentConfig(system_instruction=system, temperature=0.2)

    resp = client.generate(GEMMA, "hello", config=config)

    # The fake answers 400 "Developer instruction is not enabled" if it is sent.
    assert resp.text == "fake reply to: " + "You are terse.\n\nhello"
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count == fake.counting.prompt(
        [("user", [system + "\n\nhello"])]
    )
    assert config.system_instruction == system  # the caller's config is not modified


@pytest.mark.parametrize(
    "config",
    [
        {"response_mime_type": "application/json"},
        {"response_schema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}},
        types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="f")])]
        ),
    ],
)
def test_gemma_json_mode_and_tools_refuse_before_acquiring(
    client: Client, keyed_db: Conn, fake: FakeGemini, config: object
) -> None:
    with pytest.raises(llm_limits.UnsupportedByModel):
        client.generate(GEMMA, "hello", config=config)

    assert reservations(keyed_db) == []
    assert audit(keyed_db, "granted") == audit(keyed_db, "refused") == []
    assert fake.stats().requests == 0


def test_one_log_line_per_attempt_with_fields(
    client: Client, fake: FakeGemini, debug_logs: pytest.LogCaptureFixture
) -> None:
    fake.inject(503)
    client.generate(GEMMA, "hello")

    records = [r for r in debug_logs.records if r.name == "llm_limits" and hasattr(r, "outcome")]
    assert [(r.attempt, r.outcome) for r in records] == [  # type: ignore[attr-defined]
        (1, "release_sent"),
        (2, "commit"),
    ]
    ok = records[-1]
    for field in ("reservation_id", "key_alias", "model", "estimated_tokens", "waited_ms"):
        assert getattr(ok, field) is not None
    assert records[0].levelno == logging.WARNING


def test_module_level_generate_uses_the_environment(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", db_url)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.base_url)  # read by the SDK itself
    monkeypatch.setattr("llm_limits.client._default", None)

    assert llm_limits.generate(GEMMA, "hello").text == "fake reply to: hello"
    assert llm_limits.default_client() is llm_limits.default_client()
    llm_limits.default_client().close()


def test_from_env_without_a_url_is_a_configuration_error() -> None:
    with pytest.raises(llm_limits.ConfigurationError, match="LLM_LIMITS_DB_URL"):
        Client.from_env()
