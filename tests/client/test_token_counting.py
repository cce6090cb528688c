"""Counting input tokens before acquire, each counter for real.

* the local tokenizer: google-genai's own loader downloads a real SentencePiece model (trained
  here on Russian and English prose, served over HTTP), checks its SHA-256 and caches it where
  the SDK does; a corrupt cache or download falls through to the next counter. Only the SDK's
  pinned (URL, hash) pair is pointed at the local model: Google's file cannot be fetched here.
* ``count_tokens`` over HTTP against the fake, which counts with Gemma 3's real vocabulary;
* the byte bound.

Then, on every committed call: estimated >= actual, and estimated <= 1.05 x actual + 16
whenever an exact counter is available.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm
from google.genai import _local_tokenizer_loader as loader
from google.genai import types

import llm_limits
from llm_limits import Client
from llm_limits.local.fake_gemini import Counting, FakeGemini, Limits
from llm_limits.local.prose import page
from llm_limits.tokens import TokenCounter, estimate_tokens, reset_local_tokenizers

from ..gemma3_sentencepiece import rebuild, seed_sdk_cache
from .support import GEMMA, Conn, hold, projects, reservations, set_gemma_limits

# What the local tokenizer's text-only count gets on top: <bos> and <start_of_turn>model\n,
# then <start_of_turn>user\n ... <end_of_turn>\n for one turn, and one token of slack for its
# one part: written out here, not imported. countTokens' answer gets none of it.
ONE_TURN_TEMPLATE = 1 + 3 + 5 + 1
ROOMY = {
    "gemma-3-27b-it": Limits(rpm=1000, tpm=10_000_000, rpd=100_000),
    "gemini-2.5-flash": Limits(rpm=1000, tpm=10_000_000, rpd=100_000),
}


@pytest.fixture(scope="module")
def trained_model() -> bytes:
    """A real SentencePiece BPE model with byte fallback, trained on our Russian and English."""
    lines = [
        line
        for language in ("ru", "en")
        for seed in range(3)
        for line in page(30_000, language=language, seed=seed).splitlines()
        if line.strip()
    ]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        vocab_size=3000,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        add_dummy_prefix=False,
        minloglevel=2,
    )
    return out.getvalue()


class ModelServer:
    """Serves one file over HTTP and counts downloads, like the host the SDK fetches from."""

    def __init__(self, body: bytes) -> None:
        self.body, self.hits = body, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/gemma3.spiece.model"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def model_server(trained_model: bytes) -> Iterator[ModelServer]:
    server = ModelServer(trained_model)
    yield server
    server.stop()


def _forget_loaded_models() -> None:
    loader.load_model_proto.cache_clear()
    loader.get_sentencepiece.cache_clear()
    reset_local_tokenizers()


@pytest.fixture
def sdk_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The SDK's cache directory ($TMPDIR/vertexai_tokenizer_model), empty, per test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _forget_loaded_models()
    yield tmp_path / "vertexai_tokenizer_model"
    _forget_loaded_models()


def pin(monkeypatch: pytest.MonkeyPatch, url: str, sha256: str) -> None:
    """Point the SDK's pinned Gemma 3 model (URL and SHA-256) elsewhere."""
    config = loader._TokenizerConfig(model_url=url, model_hash=sha256)
    monkeypatch.setitem(loader._TOKENIZERS, "gemma3", config)


def cached_file(cache: Path, url: str) -> Path:
    return cache / hashlib.sha1(url.encode()).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spm_count(model: bytes, *texts: str) -> int:
    processor = spm.SentencePieceProcessor(model_proto=model)
    return sum(len(processor.encode(text)) for text in texts)


def set_counter(db: Conn, counter: str | None, model: str = GEMMA) -> None:
    db.execute(
        "update public.google_ai_model_limits set token_counter = %s where model = %s",
        (counter, model),
    )


def roomy(db: Conn) -> None:
    set_gemma_limits(db, rpm=1000, tpm=1_000_000)
    db.execute(
        "update public.google_ai_model_limits set rpm = 1000, tpm = 1000000, rpd = 100000 "
        "where model = 'gemini-2.5-flash'"
    )


def actual(fake: FakeGemini, text: str) -> int:
    return fake.counting.prompt([("user", [text])])


# -- the local tokenizer: the SDK's loader, hash check and cache, for real ----------------------


def test_the_local_tokenizer_downloads_checks_and_caches_the_model(
    sdk_cache: Path,
    model_server: ModelServer,
    trained_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin(monkeypatch, model_server.url, sha256(trained_model))
    text = page(10_000, seed=1)

    counted = TokenCounter().local("gemini-2.0-flash", text, None)

    assert counted == spm_count(trained_model, text) + ONE_TURN_TEMPLATE
    assert model_server.hits == 1
    assert cached_file(sdk_cache, model_server.url).read_bytes() == trained_model

    # A new process: the model comes from the cache, the server is not asked again.
    _forget_loaded_models()
    model_server.stop()
    assert TokenCounter().local("gemma-3-27b-it", text, None) is None  # not an SDK model name
    assert TokenCounter().local("gemini-2.5-flash", text, None) == counted
    assert model_server.hits == 1


def test_a_corrupt_cache_is_replaced_by_a_verified_download(
    sdk_cache: Path,
    model_server: ModelServer,
    trained_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin(monkeypatch, model_server.url, sha256(trained_model))
    cached = cached_file(sdk_cache, model_server.url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(trained_model[:-100])  # a truncated copy: wrong hash

    assert TokenCounter().local("gemini-2.0-flash", "Привет, мир", None) is not None

    assert model_server.hits == 1
    assert cached.read_bytes() == trained_model


def test_a_download_with_the_wrong_hash_is_refused(
    sdk_cache: Path,
    model_server: ModelServer,
    trained_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    pin(monkeypatch, model_server.url, sha256(b"the file Google publishes"))

    assert TokenCounter().local("gemini-2.0-flash", "Привет, мир", None) is None

    assert model_server.hits == 1
    assert not cached_file(sdk_cache, model_server.url).exists()
    [warning] = [r.getMessage() for r in debug_logs.records if "unavailable" in r.getMessage()]
    assert "Downloaded model file is corrupted" in warning


def test_the_client_counts_with_the_local_tokenizer(
    sdk_cache: Path,
    model_server: ModelServer,
    trained_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
    keyed_db: Conn,
    fake: FakeGemini,
) -> None:
    pin(monkeypatch, model_server.url, sha256(trained_model))
    text = page(3_000, language="en", seed=4)

    client.generate(GEMMA, text)  # token_counter is null: chosen automatically

    [res] = reservations(keyed_db)
    assert res["estimated_tokens"] == spm_count(trained_model, text) + ONE_TURN_TEMPLATE
    assert res["actual_tokens"] == actual(fake, text)
    assert fake.stats().count_calls == 0


def test_an_unusable_cache_and_no_download_fall_back_to_count_tokens(
    sdk_cache: Path,
    trained_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
    client: Client,
    keyed_db: Conn,
    fake: FakeGemini,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    # Google's real hash; the URL refuses connections, as GitHub does on a machine offline.
    real_hash = loader._TOKENIZERS["gemma3"].model_hash
    url = "http://127.0.0.1:9/gemma3.spiece.model"
    pin(monkeypatch, url, real_hash)
    seeded = cached_file(sdk_cache, url)
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(trained_model)  # a real model, but not the one pinned
    text = page(3_000, seed=5)

    client.generate(GEMMA, text)
    client.generate(GEMMA, text)

    assert not seeded.exists()  # the SDK's hash check threw it away
    assert fake.stats().count_calls == 2
    estimates = [r["estimated_tokens"] for r in reservations(keyed_db)]
    assert estimates == [actual(fake, text)] * 2  # countTokens' answer, as it is
    warnings = [r.getMessage() for r in debug_logs.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "ConnectionError" in warnings[0]


# -- count_tokens and the byte bound ------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(projects()) as srv:  # Google's limits: TPM 15,000 for gemma-3-27b-it
        yield srv


def test_count_tokens_over_http_is_exact_and_spends_no_quota(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    set_counter(keyed_db, "count_tokens")
    text = page(8_000, seed=6)

    client.generate(GEMMA, text)

    [res] = reservations(keyed_db)
    assert res["actual_tokens"] == actual(fake, text)
    assert res["estimated_tokens"] == res["actual_tokens"]  # Google's count: nothing on top
    stats = fake.stats()
    assert (stats.count_calls, stats.requests) == (1, 1)


def prompt_counted_at(fake: FakeGemini, tokens: int, seed: int) -> str:
    """A Russian prompt the fake (Gemma 3's vocabulary, template included) counts at ``tokens``."""
    text = page(tokens * 6, seed=seed)
    lo, hi = 0, len(text)  # the longest prefix counted at or below `tokens`
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if actual(fake, text[:mid]) <= tokens else (lo, mid - 1)
    for end in range(lo, max(lo - 200, 0), -1):  # a merge can skip a count; step back to it
        if actual(fake, text[:end]) == tokens:
            return text[:end]
    raise AssertionError(f"no prefix of page(seed={seed}) counts {tokens} tokens")


def test_six_1000_token_prompts_fit_a_minute_of_6000_tpm(
    keyed_db: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """countTokens' answer is what Google charges: reserving it as it is fills TPM exactly.

    With the template added on top, each reserved ~1,010 and the sixth waited a minute.
    """
    hold(monkeypatch, "a1")  # one project: one 6,000 TPM budget
    set_gemma_limits(keyed_db, rpm=60, tpm=6_000)
    set_counter(keyed_db, "count_tokens")
    tight = {"gemma-3-27b-it": Limits(rpm=60, tpm=6_000, rpd=1_000)}
    with (
        FakeGemini(projects(), tight) as fake,
        Client(db_url, base_url=fake.base_url, timeout=10.0) as client,
    ):
        prompts = [prompt_counted_at(fake, 1_000, seed=40 + i) for i in range(7)]
        for text in prompts[:6]:
            assert client.generate(GEMMA, text, mode="NO_WAIT").text
        with pytest.raises(llm_limits.RateLimited):  # the minute's 6,000 tokens are spent
            client.generate(GEMMA, prompts[6], mode="NO_WAIT")
        stats = fake.stats()

    assert (stats.ok, stats.rate_limited, stats.count_calls) == (6, 0, 7)
    rows = reservations(keyed_db)
    assert [(r["estimated_tokens"], r["actual_tokens"]) for r in rows] == [(1_000, 1_000)] * 6
    assert sum(r["counted_tokens"] for r in rows) == 6_000


def test_the_byte_bound_is_logged_once_per_model(
    client: Client, keyed_db: Conn, fake: FakeGemini, debug_logs: pytest.LogCaptureFixture
) -> None:
    set_counter(keyed_db, "bytes")
    text = page(2_000, seed=7)

    client.generate(GEMMA, text)
    client.generate(GEMMA, text)

    assert [r["estimated_tokens"] for r in reservations(keyed_db)] == [estimate_tokens(text)] * 2
    assert fake.stats().count_calls == 0
    lines = [r.getMessage() for r in debug_logs.records if "byte bound" in r.getMessage()]
    assert lines == ["counting gemma-3-27b-it input tokens with the byte bound (4-7x too high)"]


def test_a_failing_count_tokens_never_fails_the_call(
    client: Client, keyed_db: Conn, fake: FakeGemini, debug_logs: pytest.LogCaptureFixture
) -> None:
    set_counter(keyed_db, "count_tokens")
    fake.fail_count_tokens()
    text = page(2_000, seed=8)

    resp = client.generate(GEMMA, text)

    assert resp.text
    [res] = reservations(keyed_db)
    assert res["status"] == "committed"
    assert res["estimated_tokens"] == estimate_tokens(text)  # the byte bound took over
    assert any("count_tokens failed" in r.getMessage() for r in debug_logs.records)


def test_tokens_are_counted_once_per_call_not_per_attempt(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    set_counter(keyed_db, "count_tokens")
    fake.inject(429)

    client.generate(GEMMA, page(4_000, seed=9), mode="NO_WAIT")

    first, second = reservations(keyed_db)
    assert (first["status"], second["status"]) == ("rate_limited", "committed")
    assert first["estimated_tokens"] == second["estimated_tokens"]
    assert fake.stats().count_calls == 1


async def test_async_calls_count_over_the_async_client(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    set_counter(keyed_db, "count_tokens")
    text = page(5_000, language="en", seed=10)

    await client.agenerate(GEMMA, text)

    [res] = reservations(keyed_db)
    assert res["estimated_tokens"] == actual(fake, text)
    assert fake.stats().count_calls == 1


# -- long Russian prompts against gemma-3-27b's TPM of 15,000 -----------------------------------


@pytest.mark.parametrize("counter", [None, "count_tokens"])
def test_a_30000_character_russian_prompt_is_granted_and_completes(
    client: Client, keyed_db: Conn, fake: FakeGemini, counter: str | None
) -> None:
    set_counter(keyed_db, counter)
    text = page(30_000, seed=11)
    assert len(text) >= 30_000 and len(text.encode()) > 15_000

    resp = client.generate(GEMMA, text)

    assert resp.text
    [res] = reservations(keyed_db)
    assert res["status"] == "committed"
    assert res["actual_tokens"] == actual(fake, text) < 15_000


def test_the_byte_bound_refuses_the_same_prompt(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    set_counter(keyed_db, "bytes")

    with pytest.raises(llm_limits.RpcError, match="LL003"):
        client.generate(GEMMA, page(30_000, seed=11))

    assert fake.stats().requests == 0


def test_ll003_only_when_the_real_count_is_over_tpm(
    client: Client, keyed_db: Conn, fake: FakeGemini
) -> None:
    set_counter(keyed_db, "count_tokens")
    over = page(56_000, seed=12)
    assert actual(fake, over) > 15_000

    with pytest.raises(llm_limits.RpcError, match="LL003"):
        client.generate(GEMMA, over)

    assert reservations(keyed_db) == []
    assert fake.stats().requests == 0


# -- estimated against actual, on every committed call ------------------------------------------


def _mixed_requests() -> list[tuple[str, Any]]:
    """Russian and English pages, short notes and long pages, one turn and a conversation."""
    out: list[tuple[str, Any]] = []
    for i, chars in enumerate((400, 1_500, 6_000, 20_000, 40_000)):
        out.append((GEMMA, page(chars, seed=20 + i)))
        out.append(("gemini-2.5-flash", page(chars, language="en", seed=20 + i)))
    conversation = [
        types.Content(role="user", parts=[types.Part(text=page(3_000, seed=30))]),
        types.Content(role="model", parts=[types.Part(text=page(800, seed=31))]),
        types.Content(
            role="user",
            parts=[types.Part(text=page(500, language="en", seed=32)), types.Part(text="Итак?")],
        ),
    ]
    out.append((GEMMA, conversation))
    return out


@pytest.mark.parametrize("counter", ["count_tokens", "bytes"])
def test_estimates_bound_the_actual_count_and_stay_close_when_exact(
    keyed_db: Conn, db_url: str, counter: str
) -> None:
    roomy(keyed_db)
    for model in (GEMMA, "gemini-2.5-flash"):
        set_counter(keyed_db, counter, model)
    with (
        FakeGemini(projects(), ROOMY) as fake,
        Client(db_url, base_url=fake.base_url, timeout=10.0) as client,
    ):
        for model, contents in _mixed_requests():
            client.generate(model, contents)
        assert fake.stats().rate_limited == 0

    rows = reservations(keyed_db)
    assert len(rows) == len(_mixed_requests())
    for res in rows:
        assert res["status"] == "committed"
        assert res["estimated_tokens"] >= res["actual_tokens"]
        if counter == "count_tokens":
            assert res["estimated_tokens"] <= 1.05 * res["actual_tokens"] + 16


@pytest.fixture(scope="module")
def gemma3_model() -> bytes:
    return rebuild()


def test_the_rebuilt_gemma3_model_counts_like_the_fakes_vocabulary(gemma3_model: bytes) -> None:
    processor = spm.SentencePieceProcessor(model_proto=gemma3_model)
    vocabulary = Counting()
    for language in ("ru", "en"):
        for chars in (300, 5_000, 40_000):
            text = page(chars, language=language, seed=chars)
            assert len(processor.encode(text)) == vocabulary.text(text)


def test_with_gemma_3s_vocabulary_the_local_count_is_exact(
    sdk_cache: Path,
    gemma3_model: bytes,
    monkeypatch: pytest.MonkeyPatch,
    keyed_db: Conn,
    db_url: str,
) -> None:
    pin(monkeypatch, *seed_sdk_cache(gemma3_model))  # the SDK's URL, this file's hash
    roomy(keyed_db)
    with (
        FakeGemini(projects(), ROOMY) as fake,
        Client(db_url, base_url=fake.base_url, timeout=10.0) as client,
    ):
        for model, contents in _mixed_requests():
            client.generate(model, contents)
        stats = fake.stats()
    assert (stats.count_calls, stats.rate_limited) == (0, 0)

    rows = reservations(keyed_db)
    assert len(rows) == len(_mixed_requests())
    for res in rows:
        assert res["actual_tokens"] <= res["estimated_tokens"]
        assert res["estimated_tokens"] <= 1.05 * res["actual_tokens"] + 16


def test_quota_status_shows_how_close_the_estimates_were(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold(monkeypatch, "a1")  # one quota group: its row compares all three calls
    # The byte bound, whose ratio differs per call (count_tokens would be 1.00 for all three).
    set_counter(keyed_db, "bytes")
    with Client(db_url, base_url=fake.base_url, timeout=10.0) as client:
        for chars in (500, 1_500, 4_000):
            client.generate(GEMMA, page(chars, language="en", seed=chars))

    rows = reservations(keyed_db)
    ratios = sorted(r["estimated_tokens"] / r["actual_tokens"] for r in rows)
    group = rows[0]["quota_group"]
    status = keyed_db.execute(
        "select token_counter, estimates_compared, estimate_ratio_p50, estimate_ratio_max "
        "from public.quota_status() where model = %s and quota_group = %s",
        (GEMMA, group),
    ).fetchone()
    assert status is not None
    counter, compared, p50, top = status
    assert (counter, compared) == ("bytes", len(rows))
    assert float(p50) == pytest.approx(ratios[1], abs=0.001)
    assert float(top) == pytest.approx(ratios[-1], abs=0.001)
    assert 1.0 < ratios[0] < ratios[1] < ratios[2]


def test_a_model_row_names_its_counter(keyed_db: Conn) -> None:
    keyed_db.execute(
        "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd, "
        "token_counter) values ('gemini-9-pro', 'gemini-9-pro-preview', 5, 250000, 100, "
        "'count_tokens')"
    )
    row = keyed_db.execute("select * from public.token_counter(model => 'gemini-9-pro')")
    assert row.fetchall() == [("gemini-9-pro-preview", "count_tokens")]
    with pytest.raises(Exception, match="violates check constraint"):
        keyed_db.execute(
            "update public.google_ai_model_limits set token_counter = 'words' "
            "where model = 'gemini-9-pro'"
        )


def test_counting_logs_nothing_at_warning_when_it_works(
    client: Client, keyed_db: Conn, debug_logs: pytest.LogCaptureFixture
) -> None:
    set_counter(keyed_db, "count_tokens")
    client.generate(GEMMA, "Привет!")
    assert not [r for r in debug_logs.records if r.levelno >= logging.WARNING]
