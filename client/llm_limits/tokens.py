"""A local upper bound on a request's input tokens, without calling Google.

Why bytes bound tokens: Gemini and Gemma tokenize with SentencePiece with byte fallback, so
every token stands for at least one byte of UTF-8 text (a whole piece, one character, or one
fallback byte); a text of N bytes therefore never yields more than N tokens. On top of the
text, the server wraps each turn and part in a few control tokens (``<start_of_turn>user`` and
the like), which the per-item overheads below cover generously.

TPM is counted on input tokens at admission, so an under-estimate could let a request through
that Google then refuses with a 429; an over-estimate only holds some budget until
``commit_usage`` replaces it with ``usage_metadata.prompt_token_count``. Hence the bias.

Media parts (images, audio, video, files) have no byte bound: each is charged a flat
``MEDIA_PART_TOKENS`` (eight 258-token image tiles). Long audio or video can exceed that; the
commit still records the true count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.genai import types
from pydantic import BaseModel

BASE_TOKENS = 16
ITEM_TOKENS = 8  # per turn and per part: role and turn markers
MEDIA_PART_TOKENS = 2064
CALLABLE_TOOL_TOKENS = 256  # a Python function the SDK turns into a declaration

_MEDIA_KEYS = frozenset({"inline_data", "file_data", "inlineData", "fileData"})
_STRUCTURAL_KEYS = frozenset({"role", "parts", "text"})


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _cost(node: Any) -> int:
    if node is None or isinstance(node, (bytes, bytearray)):
        return 0  # bytes here are thought signatures: opaque, not prompt text
    if isinstance(node, str):
        return _bytes(node)
    if isinstance(node, (bool, int, float)):
        return len(str(node))
    if isinstance(node, types.File):
        return MEDIA_PART_TOKENS
    if isinstance(node, type) and issubclass(node, BaseModel):
        return _cost(node.model_json_schema())
    if isinstance(node, BaseModel):
        return _cost(node.model_dump(exclude_none=True))
    if isinstance(node, Mapping):
        total = 0
        for key, value in node.items():
            if key in _MEDIA_KEYS:
                total += MEDIA_PART_TOKENS
            else:
                total += (0 if key in _STRUCTURAL_KEYS else _bytes(str(key))) + _cost(value)
        return total
    if isinstance(node, (list, tuple)):
        return sum(ITEM_TOKENS + _cost(item) for item in node)
    if callable(node):
        return CALLABLE_TOOL_TOKENS + _bytes(getattr(node, "__doc__", None) or "")
    return MEDIA_PART_TOKENS  # a PIL image or another object the SDK uploads as media


def estimate_tokens(contents: Any, config: types.GenerateContentConfig | None = None) -> int:
    """An upper bound on the input tokens Google will count for this request (see module doc)."""
    total = BASE_TOKENS + ITEM_TOKENS + _cost(contents)
    if config is not None:
        for extra in (
            config.system_instruction,
            config.tools,
            config.response_schema,
            config.response_json_schema,
        ):
            if extra is not None:
                total += ITEM_TOKENS + _cost(extra)
    return total
