"""The fake counts input tokens as Google does: Gemma 3's real vocabulary plus the chat template.

Counted over HTTP through the real SDK; the expected figures are hand-checked token lists, and
the per-language ratios are the ones measured with Gemma 3's tokenizer (FIELD-NOTES).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google import genai
from google.genai import errors, types

from llm_limits.local.fake_gemini import TPM_ID, FakeGemini, Limits
from llm_limits.local.prose import page

GEMMA = "gemma-3-27b-it"
CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"


@pytest.fixture
def srv() -> Iterator[FakeGemini]:
    with FakeGemini({"p": ["KEY"]}, {GEMMA: Limits(rpm=100, tpm=3000, rpd=1000)}) as fake:
        assert fake.counting.exact, fake.counting.description  # npm ci put the vocabulary here
        yield fake


def google(srv: FakeGemini) -> genai.Client:
    opts = types.HttpOptions(base_url=srv.base_url, api_version="v1beta", timeout=10_000)
    return genai.Client(api_key="KEY", http_options=opts)


def test_a_prompt_is_counted_with_the_vocabulary_and_the_template(srv: FakeGemini) -> None:
    c = google(srv)
    text = "Привет, как дела? Hello world."
    # <bos> <start_of_turn> user \n | Привет , ▁как ▁дела ? ▁Hello ▁world . |
    # <end_of_turn> \n <start_of_turn> model \n
    assert c.models.count_tokens(model=GEMMA, contents=text).total_tokens == 17
    resp = c.models.generate_content(model=GEMMA, contents=text)
    assert resp.usage_metadata is not None
    assert resp.usage_metadata.prompt_token_count == 17
    # "fake reply to: " + the text, without a template
    assert resp.usage_metadata.candidates_token_count == srv.counting.text(resp.text or "")


def test_each_turn_adds_its_markers(srv: FakeGemini) -> None:
    c = google(srv)
    one = c.models.count_tokens(model=GEMMA, contents="Итак?").total_tokens
    turns = [
        types.Content(role="user", parts=[types.Part(text="Итак?")]),
        types.Content(role="model", parts=[types.Part(text="Итак?")]),
        types.Content(role="user", parts=[types.Part(text="Итак?")]),
    ]
    three = c.models.count_tokens(model=GEMMA, contents=turns).total_tokens
    assert one is not None and three is not None
    assert three - one == 2 * (one - 4)  # each turn: its text plus 5 markers; 4 once


@pytest.mark.parametrize(("language", "low", "high"), [("ru", 3.3, 3.9), ("en", 4.2, 4.7)])
def test_prose_counts_like_gemma(srv: FakeGemini, language: str, low: float, high: float) -> None:
    text = page(30_000, language=language, seed=3)
    c = google(srv)  # bound to a name: a collected Client closes its HTTP pool
    tokens = c.models.count_tokens(model=GEMMA, contents=text).total_tokens
    assert tokens is not None
    assert low <= len(text) / tokens <= high
    assert tokens < len(text.encode()) / 4  # the old formula over-counted both languages


def test_tpm_is_enforced_on_the_counted_tokens(srv: FakeGemini) -> None:
    c = google(srv)
    text = page(6_000, seed=4)  # about 1,700 tokens, 10,900 bytes
    c.models.generate_content(model=GEMMA, contents=text)
    with pytest.raises(errors.ClientError) as info:
        c.models.generate_content(model=GEMMA, contents=text)
    assert info.value.code == 429
    assert TPM_ID in str(info.value.details)
    [grant] = srv.stats().grants[("p", GEMMA)]
    assert grant.input_tokens == srv.counting.prompt([("user", [text])])


def test_without_the_vocabulary_it_says_so_and_counts_bytes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR), "LLM_LIMITS_GEMMA_VOCAB": "/nonexistent"}
    cmd = [
        sys.executable,
        "-m",
        "llm_limits.local.fake_gemini",
        "--port",
        "0",
        "--project",
        "p=KEY",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        base_url = proc.stdout.readline().strip()
        startup = proc.stderr.readline()
        assert "Gemma 3 vocabulary not found" in startup
        assert "ceil(utf8_bytes / 4)" in startup
        opts = types.HttpOptions(base_url=base_url, api_version="v1beta", timeout=5000)
        c = genai.Client(api_key="KEY", http_options=opts)
        assert c.models.count_tokens(model=GEMMA, contents="Привет").total_tokens == 3
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
