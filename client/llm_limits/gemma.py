"""Shape a request for its model before any quota is spent.

Gemma through the Gemini API rejects ``system_instruction`` ("Developer instruction is not
enabled"), JSON mode and function calling with a permanent 400. The system text is folded into
the first user turn instead; the other two raise ``UnsupportedByModel`` before ``acquire``, so
a request that can never succeed costs no quota.

For every model, automatic function calling is switched off when tools are present: the SDK
would otherwise send several requests on one reservation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.genai import types

from .errors import UnsupportedByModel

_TEXT_MIME_TYPES = (None, "", "text/plain")


def is_gemma(model: str) -> bool:
    return model.lower().removeprefix("models/").startswith("gemma-")


def as_config(config: Any) -> types.GenerateContentConfig | None:
    if config is None or isinstance(config, types.GenerateContentConfig):
        return config
    return types.GenerateContentConfig.model_validate(config)


def _system_text(instruction: Any) -> str:
    if isinstance(instruction, Mapping):
        is_content = "parts" in instruction or "role" in instruction
        model = types.Content if is_content else types.Part
        instruction = model.model_validate(instruction)
    if isinstance(instruction, types.Content):
        instruction = instruction.parts or []
    items = instruction if isinstance(instruction, list) else [instruction]
    texts: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            item = types.Part.model_validate(item)
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, types.Part) and item.text is not None:
            texts.append(item.text)
        else:
            raise UnsupportedByModel("gemma: system_instruction may only hold text to be folded")
    return "\n".join(texts)


def fold_system_instruction(contents: Any, text: str) -> Any:
    """Return ``contents`` with ``text`` leading its first user turn."""
    prefix = text + "\n\n"
    if isinstance(contents, str):
        return prefix + contents
    items = list(contents) if isinstance(contents, list) else [contents]
    first = items[0] if items else None
    if isinstance(first, Mapping) and ("parts" in first or "role" in first):
        first = types.Content.model_validate(first)
    if isinstance(first, types.Content):
        if first.role in (None, "user"):
            parts = [types.Part(text=prefix), *(first.parts or [])]
            return [types.Content(role="user", parts=parts), *items[1:]]
        return [types.Content(role="user", parts=[types.Part(text=text)]), *items]
    if isinstance(first, list):
        return [[prefix, *first], *items[1:]]
    # A leading run of parts is the first user turn; the SDK groups the prefix into it.
    return [prefix, *items]


def prepare_request(
    model: str, contents: Any, config: Any
) -> tuple[Any, types.GenerateContentConfig | None]:
    """Contents and config to send for ``model``; raises UnsupportedByModel up front."""
    cfg = as_config(config)
    if cfg is None:
        return contents, None
    if not is_gemma(model):
        afc = cfg.automatic_function_calling
        if cfg.tools and not (afc and afc.disable):
            off = types.AutomaticFunctionCallingConfig(disable=True)
            cfg = cfg.model_copy(update={"automatic_function_calling": off})
        return contents, cfg
    if (
        cfg.response_mime_type not in _TEXT_MIME_TYPES
        or cfg.response_schema is not None
        or cfg.response_json_schema is not None
    ):
        raise UnsupportedByModel(f"{model}: JSON mode (structured output) is not enabled")
    if cfg.tools:
        raise UnsupportedByModel(f"{model}: function calling (tools) is not enabled")
    if cfg.system_instruction is None:
        return contents, cfg
    text = _system_text(cfg.system_instruction)
    return fold_system_instruction(contents, text), cfg.model_copy(
        update={"system_instruction": None}
    )
