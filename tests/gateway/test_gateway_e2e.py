"""The real google-genai SDK through the llm-gateway (Deno) to the fake Gemini, on real Postgres."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from google.genai import errors, types
from typer.testing import CliRunner

from llm_limits.cli.app import app
from llm_limits.local.fake_gemini import FakeGemini
from tests.support import until

from ..client.support import KEYS, Conn, set_gemma_limits
from .conftest import StartGateway, audit, ledger
from .harness import Gateway, add_caller

GEMMA = "gemma-3-27b-it"
RUSSIAN = (
    "Расскажи коротко, почему в Санкт-Петербурге летом белые ночи, и как к ним привыкают "
    "люди, которые приехали с юга. Ответь по-русски, в двух-трёх предложениях."
)
ENGLISH = "Summarise the plot of a festival programme in one sentence. " * 40


def generate_requests(fake: FakeGemini) -> int:
    """generateContent calls the fake admitted (countTokens is not one)."""
    return sum(len(g) for g in fake.stats().grants.values())


def post_raw(gw: Gateway, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(gw.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_grants_settle_like_the_client_and_shape_gemma(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "kaggle-eval", [GEMMA])
    gw.secrets.append(token)
    sdk = gw.sdk(token)

    # A system instruction is folded into the first turn: the fake refuses one for Gemma.
    config = types.GenerateContentConfig(system_instruction="Отвечай кратко.")
    first = sdk.models.generate_content(model=GEMMA, contents=RUSSIAN, config=config)
    second = sdk.models.generate_content(model=f"models/{GEMMA}", contents=ENGLISH)
    counted = sdk.models.count_tokens(model=GEMMA, contents=RUSSIAN)

    assert first.text == "fake reply to: " + RUSSIAN[:40]
    assert second.text.startswith("fake reply to: Summarise")
    # The model that answered is named, for the caller that asked for another one.
    assert first.sdk_http_response is not None and first.sdk_http_response.headers is not None
    assert first.sdk_http_response.headers["x-llm-limits-model"] == GEMMA
    # The fake refuses a Gemma systemInstruction; here its text was counted in the first turn.
    assert first.usage_metadata is not None and counted.total_tokens is not None
    prompt = first.usage_metadata.prompt_token_count
    assert prompt is not None and prompt > counted.total_tokens
    rows = ledger(keyed_db)
    assert [r["status"] for r in rows] == ["committed", "committed"]
    assert {r["caller"] for r in rows} == {"kaggle-eval"}
    # The estimate was the exact upstream count, so the commit had nothing to correct.
    for row, answer in zip(rows, (first, second), strict=True):
        assert answer.usage_metadata is not None
        assert row["actual_tokens"] == answer.usage_metadata.prompt_token_count
        assert row["estimated_tokens"] == row["actual_tokens"]
        assert row["completion_tokens"] == answer.usage_metadata.candidates_token_count
    assert [d["caller"] for d in audit(keyed_db, "granted")] == ["kaggle-eval"] * 2
    assert generate_requests(fake) == 2
    used = keyed_db.execute(
        "select last_used_at is not null from public.google_ai_callers where name = 'kaggle-eval'"
    ).fetchone()
    assert used == (True,)


def test_no_wait_refusal_is_a_google_shaped_429_with_retry_info(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    set_gemma_limits(keyed_db, rpm=1)
    gw = start_gateway(held=("a1",))
    token = add_caller(keyed_db, "bot")
    gw.secrets.append(token)
    sdk = gw.sdk(token, **{"x-llm-limits-mode": "NO_WAIT"})
    sdk.models.generate_content(model=GEMMA, contents=RUSSIAN)

    with pytest.raises(errors.ClientError) as caught:
        sdk.models.generate_content(model=GEMMA, contents=RUSSIAN)

    err = caught.value
    assert (err.code, err.status) == (429, "RESOURCE_EXHAUSTED")
    details = err.details["error"]["details"]
    retry = [d for d in details if d["@type"].endswith("google.rpc.RetryInfo")]
    assert len(retry) == 1 and retry[0]["retryDelay"].endswith("s")
    assert 0 < float(retry[0]["retryDelay"][:-1]) <= 61
    info = [d for d in details if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info[0]["reason"] == "RPM"
    # The same verdict in headers, for a client that reads no body (llm_limits.batch).
    headers = err.response.headers
    assert headers["x-llm-limits-reason"] == "rpm"
    assert 0 < int(headers["retry-after"]) <= 61
    assert generate_requests(fake) == 1  # the refusal never reached Google
    refused = audit(keyed_db, "refused")
    assert [(d["reason"], d["mode"], d["caller"]) for d in refused] == [("rpm", "NO_WAIT", "bot")]


def test_streamed_answer_passes_through_and_commits_the_last_chunk(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "streamer")
    gw.secrets.append(token)

    sdk = gw.sdk(token)  # held: a collected Client closes its HTTP connection pool
    chunks = list(sdk.models.generate_content_stream(model=GEMMA, contents=RUSSIAN))

    assert len(chunks) == 3
    assert "".join(c.text or "" for c in chunks) == "fake reply to: " + RUSSIAN[:40]
    final = chunks[-1].usage_metadata
    assert final is not None and final.candidates_token_count
    [row] = ledger(keyed_db)
    assert row["status"] == "committed"
    assert (row["actual_tokens"], row["completion_tokens"]) == (
        final.prompt_token_count,
        final.candidates_token_count,
    )
    [meta] = [r[0] for r in keyed_db.execute("select meta::jsonb from public.token_usage")]
    # settle read the finish reason and the model version off the last chunk.
    assert (meta["caller"], meta["finish_reason"], meta["model_version"]) == (
        "streamer",
        "STOP",
        GEMMA,
    )


def test_a_stream_google_cuts_mid_way_is_settled_as_lost_and_not_retried(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "streamer")
    gw.secrets.append(token)
    fake.script([{"cut": True}])  # the first event, then the connection closes

    sdk = gw.sdk(token)
    received: list[types.GenerateContentResponse] = []
    with pytest.raises(Exception):  # noqa: B017 - the SDK's HTTP library's own error
        for chunk in sdk.models.generate_content_stream(model=GEMMA, contents=RUSSIAN):
            received.append(chunk)

    # The first chunk reached the caller, so the gateway could not try again.
    assert len(received) == 1
    until(
        lambda: [r["status"] for r in ledger(keyed_db)] == ["released"],
        lambda: f"the ledger released: {ledger(keyed_db)}",
        timeout=10.0,
    )
    [released] = audit(keyed_db, "released")
    assert (released["sent"], released["reason"]) == (True, "connection_lost")
    assert generate_requests(fake) == 1


def test_a_caller_gone_mid_stream_is_settled_as_sent(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "quitter")
    gw.secrets.append(token)
    fake.hang(5.0)  # the stream pauses after its first event
    host, port = gw.url.removeprefix("http://").split(":")
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": RUSSIAN}]}]}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1beta/models/{GEMMA}:streamGenerateContent?alt=sse HTTP/1.1\r\n"
            f"Host: {host}\r\nx-goog-api-key: {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data:" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the gateway closed before the first event: {received!r}"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
    # The caller hung up after the first chunk: the call reached Google and stays counted.
    until(
        lambda: [r["status"] for r in ledger(keyed_db)] == ["released"],
        lambda: f"the ledger released: {ledger(keyed_db)}",
        timeout=10.0,
    )
    [released] = audit(keyed_db, "released")
    assert released["sent"] is True
    assert released["reason"] == "cancelled"


def test_revoked_token_is_refused_at_once(
    start_gateway: StartGateway, keyed_db: Conn, db_url: str, fake: FakeGemini
) -> None:
    gw = start_gateway()
    runner = CliRunner()
    added = runner.invoke(app, ["callers", "add", "notebook-7", "--db-url", db_url])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    gw.secrets.append(token)
    sdk = gw.sdk(token)
    sdk.models.generate_content(model=GEMMA, contents=ENGLISH)

    revoked = runner.invoke(app, ["callers", "revoke", "notebook-7", "--db-url", db_url])
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(errors.ClientError) as caught:
        sdk.models.generate_content(model=GEMMA, contents=ENGLISH)

    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")
    assert len(ledger(keyed_db)) == 1
    assert generate_requests(fake) == 1
    changes = keyed_db.execute(
        "select details->>'op', details->'new'->>'active' from public.google_ai_audit_log "
        "where event = 'config_changed' and details->>'table' = 'google_ai_callers' order by id"
    ).fetchall()
    assert changes == [("insert", "true"), ("update", "false")]
    listed = runner.invoke(app, ["callers", "list", "--db-url", db_url])
    assert "notebook-7" in listed.stdout and "revoked" in listed.stdout
    assert token not in listed.stdout


def test_google_429_is_reported_and_the_cooldown_follows(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway(held=("a1", "a2"))  # one project: a 429 cools down every held key
    token = add_caller(keyed_db, "bot")
    gw.secrets.append(token)
    fake.inject(429)

    no_wait = gw.sdk(token, **{"x-llm-limits-mode": "NO_WAIT"})
    with pytest.raises(errors.ClientError) as caught:
        no_wait.models.generate_content(model=GEMMA, contents=RUSSIAN)

    # Attempt 1: Google's 429, reported. Attempt 2 acquires again and meets the cooldown.
    assert caught.value.code == 429
    reasons = [d["reason"] for d in caught.value.details["error"]["details"] if "reason" in d]
    assert reasons == ["COOLDOWN"]
    [row] = ledger(keyed_db)
    assert (row["status"], row["quota_group"]) == ("rate_limited", "proj-a")
    [reported] = audit(keyed_db, "rate_limited")
    assert reported["quota_id"].startswith("GenerateRequestsPerMinute")
    assert [d["reason"] for d in audit(keyed_db, "refused")] == ["cooldown"]
    cooling = keyed_db.execute(
        "select cooldown_until > clock_timestamp() - interval '5 seconds' "
        "from public.google_ai_quota_state where quota_group = 'proj-a'"
    ).fetchone()
    assert cooling == (True,)
    assert fake.stats().rate_limited == 1

    # A WAIT call sits out the cooldown and is then granted.
    sdk = gw.sdk(token)
    answer = sdk.models.generate_content(model=GEMMA, contents=RUSSIAN)
    assert answer.text
    assert [r["status"] for r in ledger(keyed_db)] == ["rate_limited", "committed"]


def test_a_429_moves_on_to_another_project(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "bot")
    gw.secrets.append(token)
    fake.inject(429, key=KEYS["a1"][2])

    sdk = gw.sdk(token)
    answer = sdk.models.generate_content(model=GEMMA, contents=ENGLISH)

    assert answer.text
    rows = ledger(keyed_db)
    assert [(r["status"], r["quota_group"]) for r in rows] == [
        ("rate_limited", "proj-a"),
        ("committed", "proj-b"),
    ]
    assert len({r["request_id"] for r in rows}) == 1


def test_an_invalid_google_key_is_disabled_and_never_logged(
    start_gateway: StartGateway, keyed_db: Conn, fake_lines: list[str]
) -> None:
    invalid = KEYS["a1"][2]
    with FakeGemini({"proj-a": [invalid]}, invalid_keys=[invalid], log=fake_lines.append) as bad:
        gw = start_gateway(held=("a1",), google=bad)
        token = add_caller(keyed_db, "bot")
        gw.secrets.append(token)
        sdk = gw.sdk(token)
        with pytest.raises(errors.ServerError) as caught:
            sdk.models.generate_content(model=GEMMA, contents=ENGLISH)

    # settle disabled the key and said try again; the next acquire found no key left.
    assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")
    active = keyed_db.execute(
        "select is_active, disabled_reason from public.google_ai_api_keys where key_alias = 'a1'"
    ).fetchone()
    assert active == (False, "API_KEY_INVALID")
    assert [r["status"] for r in ledger(keyed_db)] == ["released"]
    [disabled] = audit(keyed_db, "key_disabled")
    assert invalid not in json.dumps(disabled)


def test_bad_input_is_a_google_shaped_4xx_and_spends_nothing(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway(LLM_GATEWAY_MAX_BODY_BYTES=4096)
    token = add_caller(keyed_db, "narrow", ["gemini-2.5-flash"])
    wide = add_caller(keyed_db, "wide")
    gw.secrets += [token, wide]
    path = f"/v1beta/models/{GEMMA}:generateContent"
    ok_body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    auth = {"content-type": "application/json"}
    cases = {
        "no token": (path, ok_body, auth, 401),
        "unknown token": (path, ok_body, {**auth, "x-goog-api-key": "llmk_nope"}, 401),
        "model not allowed": (path, ok_body, {**auth, "x-goog-api-key": token}, 403),
        "malformed JSON": (
            path,
            b'{"contents": [',
            {**auth, "authorization": f"Bearer {wide}"},
            400,
        ),
        "unknown model": (
            "/v1beta/models/gemma-9-zz:generateContent",
            ok_body,
            {**auth, "x-goog-api-key": wide},
            404,
        ),
        "body too large": (
            path,
            json.dumps({"contents": [{"parts": [{"text": "я" * 5000}]}]}).encode(),
            {**auth, "x-goog-api-key": wide},
            413,
        ),
        "JSON mode on Gemma": (
            path,
            json.dumps(
                {
                    "contents": [{"parts": [{"text": "hi"}]}],
                    "generationConfig": {"responseMimeType": "application/json"},
                }
            ).encode(),
            {**auth, "x-goog-api-key": wide},
            400,
        ),
        "tools on Gemma": (
            path,
            json.dumps(
                {
                    "contents": [{"parts": [{"text": "hi"}]}],
                    "tools": [{"functionDeclarations": [{"name": "f"}]}],
                }
            ).encode(),
            {**auth, "x-goog-api-key": wide},
            400,
        ),
        "bad wait header": (
            path,
            ok_body,
            {**auth, "x-goog-api-key": wide, "x-llm-limits-max-wait": "soon"},
            400,
        ),
        "unknown route": ("/v1beta/models", ok_body, {**auth, "x-goog-api-key": wide}, 404),
    }
    for name, (route, body, headers, status) in cases.items():
        code, answer = post_raw(gw, route, body, headers)
        assert code == status, name
        error = answer["error"]
        assert error["code"] == status and error["status"] and error["message"], name
    assert ledger(keyed_db) == []
    assert fake.stats().requests == 0  # not even a countTokens went out

    # A request without contents, which Google would refuse too, is refused before counting.
    code, answer = post_raw(gw, path, b'{"contents": []}', {**auth, "x-goog-api-key": wide})
    assert (code, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert "contents is not specified" in answer["error"]["message"]
    assert ledger(keyed_db) == []
    assert generate_requests(fake) == 0


def test_the_day_of_27b_spent_the_bot_is_served_by_12b_and_told_so(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    keyed_db.execute("update public.google_ai_model_limits set rpd = 1 where model = 'gemma-3-27b'")
    keyed_db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class) values"
        " ('telegram-bot', 'interactive'), ('kaggle-batch', 'batch')"
    )
    gw = start_gateway(held=("a1",))
    bot, notebook = add_caller(keyed_db, "telegram-bot"), add_caller(keyed_db, "kaggle-batch")
    gw.secrets += [bot, notebook]

    bot_sdk = gw.sdk(bot)  # held: a collected Client closes its HTTP connection pool
    notebook_sdk = gw.sdk(notebook, **{"x-llm-limits-mode": "NO_WAIT"})
    first = bot_sdk.models.generate_content(model=GEMMA, contents=RUSSIAN)
    second = bot_sdk.models.generate_content(model=GEMMA, contents=RUSSIAN)
    with pytest.raises(errors.ClientError) as caught:
        notebook_sdk.models.generate_content(model=GEMMA, contents=ENGLISH)

    answered = [a.sdk_http_response.headers["x-llm-limits-model"] for a in (first, second)]  # type: ignore[union-attr]
    assert answered == [GEMMA, "gemma-3-12b-it"]
    assert second.text == "fake reply to: " + RUSSIAN[:40]
    assert {m: len(g) for (_, m), g in fake.stats().grants.items()} == {
        GEMMA: 1, "gemma-3-12b-it": 1,
    }  # fmt: skip
    assert caught.value.code == 429
    info = [d for d in caught.value.details["error"]["details"] if d["@type"].endswith("ErrorInfo")]
    assert info[0]["reason"] == "RPD"
    fell_back = keyed_db.execute(
        "select model, details #>> '{granted,fallback_from}' from public.google_ai_reservations"
        " where caller = 'telegram-bot' order by granted_at"
    ).fetchall()
    assert fell_back == [("gemma-3-27b", None), ("gemma-3-12b", "gemma-3-27b")]
