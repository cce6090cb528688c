"""No database: the token bound, Gemma's request shaping, and reading Google's errors."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

import llm_limits
from llm_limits.gemma import fold_system_instruction, prepare_request
from llm_limits.local.fake_gemini import Counting
from llm_limits.tokens import MEDIA_PART_TOKENS, estimate_tokens

# -- the token bound -------------------------------------------------------------------------


GEMMA_COUNT = Counting()  # Gemma 3's vocabulary with the chat template, loaded once
BYTES_COUNT = Counting(vocabulary=False)


@given(st.text())
def test_the_byte_bound_bounds_utf8_bytes_and_the_fake_tokenizer(text: str) -> None:
    estimate = estimate_tokens(text)
    assert estimate >= len(text.encode("utf-8"))
    assert estimate >= BYTES_COUNT.prompt([("user", [text])])
    assert estimate >= GEMMA_COUNT.prompt([("user", [text])])


@given(st.lists(st.text(), min_size=1, max_size=5), st.text())
def test_the_estimate_bounds_every_shape_of_contents(texts: list[str], system: str) -> None:
    floor = sum(len(t.encode()) for t in texts)
    config = types.GenerateContentConfig(system_instruction=system)
    shapes: list[Any] = [
        texts,
        [types.Content(role="user", parts=[types.Part(text=t) for t in texts])],
        [{"role": "user", "parts": [{"text": t} for t in texts]}],
        [types.UserContent(parts=[types.Part(text=t)]) for t in texts],
    ]
    for contents in shapes:
        assert estimate_tokens(contents) >= floor
        assert estimate_tokens(contents, config) >= floor + len(system.encode())


def test_media_parts_get_a_flat_charge() -> None:
    image = types.Part.from_bytes(data=b"\x89PNG" * 100_000, mime_type="image/png")
    estimate = estimate_tokens([image, "what is this?"])
    assert MEDIA_PART_TOKENS <= estimate < MEDIA_PART_TOKENS + 100


def test_tools_and_schemas_count() -> None:
    decl = types.FunctionDeclaration(name="get_weather", description="w" * 500)
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[decl])])
    assert estimate_tokens("hi", config) > estimate_tokens("hi") + 500


# -- Gemma -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        ("hello", "S\n\nhello"),
        (["a", "b"], ["S\n\n", "a", "b"]),
        ([["a"], ["b"]], [["S\n\n", "a"], ["b"]]),
    ],
)
def test_fold_plain_shapes(contents: Any, expected: Any) -> None:
    assert fold_system_instruction(contents, "S") == expected


def test_fold_into_a_user_content_and_before_a_model_turn() -> None:
    user = types.Content(role="user", parts=[types.Part(text="hi")])
    model = types.Content(role="model", parts=[types.Part(text="earlier")])

    [folded, rest] = fold_system_instruction([user, model], "S")
    assert folded.role == "user" and [p.text for p in folded.parts or []] == ["S\n\n", "hi"]
    assert rest is model

    first, *others = fold_system_instruction([model, user], "S")
    assert first.role == "user" and (first.parts or [])[0].text == "S"
    assert others == [model, user]

    [from_dict] = fold_system_instruction({"role": "user", "parts": [{"text": "x"}]}, "S")
    assert [p.text for p in from_dict.parts or []] == ["S\n\n", "x"]


@pytest.mark.parametrize(
    "system",
    [
        "line one\nline two",
        types.Content(parts=[types.Part(text="line one"), types.Part(text="line two")]),
        ["line one", types.Part(text="line two")],
        {"parts": [{"text": "line one"}, {"text": "line two"}]},
    ],
)
def test_system_instruction_shapes_fold_to_text(system: Any) -> None:
    contents, config = prepare_request("gemma-3-27b", "hello", {"system_instruction": system})
    assert contents == "line one\nline two\n\nhello"
    assert config is not None and config.system_instruction is None


def test_non_text_system_instruction_is_refused_for_gemma() -> None:
    image = types.Part.from_bytes(data=b"x", mime_type="image/png")
    with pytest.raises(llm_limits.UnsupportedByModel):
        prepare_request("gemma-3-27b-it", "hi", {"system_instruction": [image]})


def test_other_models_keep_system_instruction_and_lose_automatic_function_calling() -> None:
    def get_weather(city: str) -> str:
        """Weather of a city."""
        return city

    contents, config = prepare_request(
        "gemini-2.5-flash", "hi", {"system_instruction": "S", "tools": [get_weather]}
    )
    assert contents == "hi"
    assert config is not None and config.system_instruction == "S"
    afc = config.automatic_function_calling
    assert afc is not None and afc.disable is True


# -- our refusals (Google's errors are read by public.settle: supabase/tests/settle/) ----------


def test_rate_limited_carries_reason_and_seconds() -> None:
    err = llm_limits.RateLimited("rpm", 1.25)
    assert (err.reason, err.retry_after) == ("rpm", 1.25)
    assert "rpm" in str(err) and "1.250" in str(err)
    assert isinstance(err, llm_limits.LimitsError)
