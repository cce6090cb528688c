"""FakeGemini through real HTTP and the real google-genai SDK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from llm_limits.local.fake_gemini import (
    PACIFIC,
    RPD_ID,
    RPM_ID,
    TPM_ID,
    FakeGemini,
    Limits,
    byte_formula_tokens,
)

GEMMA = "gemma-3-27b-it"
FLASH = "gemini-2.5-flash"
LIMITS = {GEMMA: Limits(rpm=3, tpm=200, rpd=100), FLASH: Limits(rpm=5, tpm=1000, rpd=2)}
PROJECTS = {"proj-a": ["KEY_A1", "KEY_A2"], "proj-b": ["KEY_B1"]}
# 2025-06-01 23:59:00 in Los Angeles: one minute before the daily reset.
T0 = datetime(2025, 6, 1, 23, 59, tzinfo=PACIFIC).timestamp()
CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def srv(clock: Clock) -> Iterator[FakeGemini]:
    # These tests are about quotas and errors: small, hand-checkable counts (bytes / 4).
    # test_fake_counting.py covers counting with Gemma 3's vocabulary.
    fake = FakeGemini(
        PROJECTS,
        LIMITS,
        invalid_keys={"KEY_BAD"},
        leaked_keys={"KEY_LEAKED"},
        clock=clock,
        vocabulary=False,
    )
    with fake:
        yield fake


def client(srv: FakeGemini, key: str = "KEY_A1", timeout: int = 5000) -> genai.Client:
    # Bind the result to a name: a Client closes its HTTP pool when garbage collected, so
    # `client(srv).models.generate_content(...)` fails with "client has been closed".
    opts = types.HttpOptions(base_url=srv.base_url, api_version="v1beta", timeout=timeout)
    return genai.Client(api_key=key, http_options=opts)


def ask(srv: FakeGemini, key: str = "KEY_A1", model: str = GEMMA, text: str = "hi") -> str:
    c = client(srv, key)
    return c.models.generate_content(model=model, contents=text).text or ""


def rejected(srv: FakeGemini, key: str = "KEY_A1", model: str = GEMMA, text: str = "hi") -> Any:
    with pytest.raises(errors.ClientError) as info:
        ask(srv, key, model, text)
    return info.value


def detail(err: errors.APIError, kind: str) -> dict[str, Any]:
    body: dict[str, Any] = err.details
    return next(d for d in body["error"]["details"] if d["@type"].endswith(kind))


def raw_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_success_and_usage_metadata(srv: FakeGemini) -> None:
    c = client(srv)
    resp = c.models.generate_content(model=GEMMA, contents="hello world")
    assert resp.text == "fake reply to: hello world"
    usage = resp.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == byte_formula_tokens("hello world") == 3
    assert usage.candidates_token_count == byte_formula_tokens("fake reply to: hello world")
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert resp.model_version == GEMMA
    assert resp.candidates and resp.candidates[0].finish_reason == types.FinishReason.STOP


def test_count_tokens_is_free(srv: FakeGemini) -> None:
    c = client(srv)
    for _ in range(LIMITS[GEMMA].rpm + 2):
        resp = c.models.count_tokens(model=GEMMA, contents="a" * 9)
        assert resp.total_tokens == 3
    assert srv.stats().grants == {}
    ask(srv)


def test_keys_of_one_project_share_rpm(srv: FakeGemini, clock: Clock) -> None:
    for i, key in enumerate(["KEY_A1", "KEY_A2", "KEY_A1"]):
        clock.now = T0 + 10 * i
        ask(srv, key)
    clock.now = T0 + 25
    err = rejected(srv, "KEY_A2")
    assert err.code == 429 and err.status == "RESOURCE_EXHAUSTED"
    violation = detail(err, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == RPM_ID
    assert violation["quotaValue"] == "3"
    assert violation["quotaDimensions"] == {"location": "global", "model": "gemma-3-27b"}
    # The oldest grant (t=0) ages out at t=60: 35 s from now.
    assert detail(err, "RetryInfo")["retryDelay"] == "35s"
    assert "limit: 3, model: gemma-3-27b\nPlease retry in 35s." in err.message
    ask(srv, "KEY_B1")  # another project has its own budget
    clock.now = T0 + 59.5
    assert detail(rejected(srv), "RetryInfo")["retryDelay"] == "0.5s"
    clock.now = T0 + 60
    ask(srv, "KEY_A2")
    stats = srv.stats()
    assert stats.rate_limited == 2 and stats.ok == 5 and stats.requests == 7
    assert [g.ts - T0 for g in stats.grants[("proj-a", GEMMA)]] == [0, 10, 20, 60]
    assert len(stats.grants[("proj-b", GEMMA)]) == 1


def test_tpm_counts_input_tokens(srv: FakeGemini, clock: Clock) -> None:
    ask(srv, text="x" * 600)  # 150 of 200 tokens
    clock.now += 5
    err = rejected(srv, "KEY_A2", text="x" * 400)
    assert err.code == 429
    violation = detail(err, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == TPM_ID and violation["quotaValue"] == "200"
    assert "generate_content_free_tier_input_token_count" in violation["quotaMetric"]
    assert detail(err, "RetryInfo")["retryDelay"] == "55s"
    ask(srv, text="x" * 200)  # 50 more tokens still fit
    big = rejected(srv, "KEY_B1", text="x" * 900)  # larger than the whole budget
    assert detail(big, "QuotaFailure")["violations"][0]["quotaId"] == TPM_ID


def test_rpd_resets_at_pacific_midnight(srv: FakeGemini, clock: Clock) -> None:
    ask(srv, model=FLASH)
    ask(srv, model=FLASH)
    clock.now += 30
    err = rejected(srv, model=FLASH)
    assert detail(err, "QuotaFailure")["violations"][0]["quotaId"] == RPD_ID
    assert detail(err, "RetryInfo")["retryDelay"] == "30s"
    clock.now += 30
    ask(srv, model=FLASH)


def test_several_violations_listed(srv: FakeGemini, clock: Clock) -> None:
    for _ in range(3):
        ask(srv, text="x" * 200)
    err = rejected(srv, text="x" * 240)
    ids = [v["quotaId"] for v in detail(err, "QuotaFailure")["violations"]]
    assert ids == [RPM_ID, TPM_ID]
    assert err.message.count("Quota exceeded for metric") == 2


def test_gemma_rejects_system_instruction_json_and_tools(srv: FakeGemini) -> None:
    c = client(srv)
    models = c.models
    configs = {
        "Developer instruction": types.GenerateContentConfig(system_instruction="be brief"),
        "JSON mode": types.GenerateContentConfig(response_mime_type="application/json"),
        "Function calling": types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="f")])]
        ),
    }
    for feature, config in configs.items():
        with pytest.raises(errors.ClientError) as info:
            models.generate_content(model=GEMMA, contents="hi", config=config)
        assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
        assert info.value.message == f"{feature} is not enabled for models/{GEMMA}"
    resp = models.generate_content(model=FLASH, contents="hi", config=configs["JSON mode"])
    assert resp.text == "fake reply to: hi"
    assert srv.stats().errors == {400: 3}


def test_system_instruction_counts_as_input(srv: FakeGemini) -> None:
    config = types.GenerateContentConfig(system_instruction="x" * 40)
    c = client(srv)
    resp = c.models.generate_content(model=FLASH, contents="hi", config=config)
    assert resp.usage_metadata and resp.usage_metadata.prompt_token_count == 11


@pytest.mark.parametrize("key", ["KEY_BAD", "KEY_NOBODY_KNOWS"])
def test_invalid_key(srv: FakeGemini, key: str) -> None:
    err = rejected(srv, key)
    assert err.code == 400 and err.status == "INVALID_ARGUMENT"
    assert err.message == "API key not valid. Please pass a valid API key."
    assert detail(err, "ErrorInfo")["reason"] == "API_KEY_INVALID"
    assert key not in str(err.details)


def test_leaked_key(srv: FakeGemini) -> None:
    err = rejected(srv, "KEY_LEAKED")
    assert err.code == 403 and err.status == "PERMISSION_DENIED"
    assert "reported as leaked" in err.message


def test_unknown_model_and_path(srv: FakeGemini) -> None:
    err = rejected(srv, model="gemini-9-ultra")
    assert err.code == 404 and err.status == "NOT_FOUND"
    status, body = raw_post(srv.base_url + "/v1beta/nothing", {}, {"x-goog-api-key": "KEY_A1"})
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"


def test_raw_http_query_key_and_snake_case(srv: FakeGemini) -> None:
    url = f"{srv.base_url}/v1/models/{GEMMA}:generateContent?key=KEY_B1"
    body = {"contents": [{"role": "user", "parts": [{"text": "snake"}]}],
            "generation_config": {"response_mime_type": "application/json"}}  # fmt: skip
    status, reply = raw_post(url, body, {"Content-Type": "application/json"})
    assert status == 400 and reply["error"]["message"].startswith("JSON mode")
    del body["generation_config"]
    status, reply = raw_post(url, body, {})
    assert status == 200 and reply["usageMetadata"]["promptTokenCount"] == 2
    assert len(reply["responseId"]) == 32


def test_injected_faults(srv: FakeGemini) -> None:
    srv.inject(503, count=2)
    for _ in range(2):
        with pytest.raises(errors.ServerError) as info:
            ask(srv)
        assert info.value.code == 503 and info.value.status == "UNAVAILABLE"
        assert info.value.message == "The model is overloaded. Please try again later."
    srv.inject(429, key="KEY_A2")
    ask(srv, "KEY_A1")  # the fault waits for its key
    err = rejected(srv, "KEY_A2")
    assert detail(err, "QuotaFailure")["violations"][0]["quotaId"] == RPM_ID
    assert detail(err, "RetryInfo")["retryDelay"] == "1s"
    srv.inject(500)
    with pytest.raises(errors.ServerError) as info:
        ask(srv)
    assert info.value.status == "INTERNAL"
    ask(srv)
    stats = srv.stats()
    assert stats.requests == 6 and stats.ok == 2 and stats.rate_limited == 1
    assert stats.errors == {503: 2, 429: 1, 500: 1}
    with pytest.raises(ValueError):
        srv.inject(418)


def test_outage_answers_503_to_everyone_until_it_ends(srv: FakeGemini, clock: Clock) -> None:
    srv.outage(17.0)
    for key in ("KEY_A1", "KEY_B1"):
        with pytest.raises(errors.ServerError) as info:
            ask(srv, key)
        assert (info.value.code, info.value.status) == (503, "UNAVAILABLE")
    clock.now += 16.9
    with pytest.raises(errors.ServerError):
        ask(srv)
    clock.now += 0.1
    assert ask(srv) == "fake reply to: hi"
    stats = srv.stats()
    assert (stats.requests, stats.ok, stats.errors) == (4, 1, {503: 3})
    assert len(stats.grants[("proj-a", GEMMA)]) == 1  # a failed call spends no quota here
    srv.outage(5.0, status=504)
    with pytest.raises(errors.ServerError) as info:
        ask(srv)
    assert info.value.status == "DEADLINE_EXCEEDED"
    with pytest.raises(ValueError):
        srv.outage(5.0, status=429)


def test_hang_makes_client_time_out(srv: FakeGemini) -> None:
    srv.hang(3.0)
    with pytest.raises(Exception) as info:
        c = client(srv, timeout=300)
        c.models.generate_content(model=GEMMA, contents="hi")
    assert "Timeout" in type(info.value).__name__
    ask(srv)
    # Quota was charged on arrival, as Google charges a call that reached it.
    assert len(srv.stats().grants[("proj-a", GEMMA)]) == 2


def test_concurrent_requests_admit_exactly_rpm(srv: FakeGemini) -> None:
    url = f"{srv.base_url}/v1beta/models/{GEMMA}:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    statuses: list[int] = []
    lock = threading.Lock()

    def call(key: str) -> None:
        status, _ = raw_post(url, body, {"x-goog-api-key": key})
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call, args=(k,)) for k in ["KEY_A1", "KEY_A2"] * 10]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 3 + [429] * 17


def test_reset(srv: FakeGemini) -> None:
    for _ in range(3):
        ask(srv)
    srv.inject(503)
    srv.reset()
    ask(srv)
    assert srv.stats().ok == 1 and srv.stats().requests == 1


def test_duplicate_key_rejected() -> None:
    with pytest.raises(ValueError) as info:
        FakeGemini({"a": ["SAME_KEY"], "b": ["SAME_KEY"]})
    assert "SAME_KEY" not in str(info.value)


async def test_async_path(srv: FakeGemini) -> None:
    c = client(srv)
    resp = await c.aio.models.generate_content(model=GEMMA, contents="async hello")
    assert resp.text == "fake reply to: async hello"
    srv.inject(503)
    with pytest.raises(errors.ServerError):
        await c.aio.models.generate_content(model=GEMMA, contents="again")


def test_cli_serves_and_summarises_without_leaking_keys() -> None:
    secret = "AIzaSECRET_FROM_ENV_123"
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR), "FAKE_KEY_B": secret}
    cmd = [sys.executable, "-m", "llm_limits.local.fake_gemini", "--port", "0",
           "--project", "proj-a=KEY_CLI_A1,KEY_CLI_A2", "--project-env", "proj-b=FAKE_KEY_B",
           "--limit", f"{GEMMA}=1,15000,14400", "--latency", "0.01"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        opts = types.HttpOptions(base_url=base_url, api_version="v1beta", timeout=5000)
        codes = []
        for key in ["KEY_CLI_A1", secret, "KEY_CLI_A2", "KEY_UNKNOWN_XYZ"]:
            cli = genai.Client(api_key=key, http_options=opts)
            try:
                codes.append(200 if cli.models.generate_content(model=GEMMA, contents="hi") else 0)
            except errors.ClientError as e:
                codes.append(e.code)
        assert codes == [200, 200, 429, 400]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["requests"] == 4 and summary["ok"] == 2 and summary["429s"] == 1
    startup, *requests = err.strip().splitlines()
    assert startup.startswith(f"fake Gemini at {base_url}: counting tokens with Gemma 3's")
    assert len(requests) == 4
    assert "proj-a" in err and "proj-b" in err and "key#" in err
    for key in ["KEY_CLI_A1", "KEY_CLI_A2", secret, "KEY_UNKNOWN_XYZ"]:
        assert key not in out + err


def test_stream_is_admitted_like_a_call_and_sent_in_events(srv: FakeGemini) -> None:
    c = client(srv)
    text = "Расскажи о белых ночах"
    chunks = list(c.models.generate_content_stream(model=GEMMA, contents=text))

    assert "".join(ch.text or "" for ch in chunks) == "fake reply to: " + text
    assert len(chunks) == 3
    usage = [ch.usage_metadata for ch in chunks]
    assert all(u is not None and u.prompt_token_count == byte_formula_tokens(text) for u in usage)
    assert usage[-1] is not None
    assert usage[-1].candidates_token_count == byte_formula_tokens("fake reply to: " + text)
    assert chunks[-1].candidates and chunks[-1].candidates[0].finish_reason == "STOP"
    assert sum(len(g) for g in srv.stats().grants.values()) == 1
    for _ in range(LIMITS[GEMMA].rpm - 1):
        ask(srv)
    with pytest.raises(errors.ClientError) as info:
        list(c.models.generate_content_stream(model=GEMMA, contents=text))
    assert info.value.code == 429  # a refused stream is a plain JSON error, as Google's
