"""Count a request's input tokens before ``acquire``: the one place the client does it.

TPM is charged on input tokens at admission, so the count must be an upper bound of what Google
will charge (an under-count could let through a call that Google then refuses with a 429) and
as close to it as possible (an over-count holds TPM that is never used, and refuses a long
prompt with LL003 although Google would take it). ``settle`` later replaces the count with
the response's ``usageMetadata.promptTokenCount`` either way.

The chain, first that serves the model (the model row's ``token_counter`` may pin one; null
chooses automatically):

1. ``gemma3``: google-genai's ``LocalTokenizer``, Google's own Gemma 3 SentencePiece model,
   which the Gemini 2.x/3 models share. The SDK downloads it once, checks its SHA-256 and
   caches it under ``$TMPDIR/vertexai_tokenizer_model/``. It counts text only, so Gemma's chat
   template is added on top (``TEMPLATE_*`` below).
2. ``count_tokens``: ``models.count_tokens`` over HTTP with a key this process holds. It spends
   no generate quota. Used when no local tokenizer serves the model, or it could not load.
   Its answer is Google's own count and is taken as it is: no template on top (adding one
   made 1,000-token prompts fit 5 a minute into 6,000 TPM instead of 6). Only what it was
   not sent (a Gemini system instruction, tools, a schema) is added as a byte bound.
3. ``bytes``: a UTF-8 byte bound (``estimate_tokens``), logged once per model. Always safe,
   4.4x (English) to 6.6x (Russian) too high.

A counter that fails hands over to the next one; counting never fails a call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import types
from pydantic import BaseModel

from . import db, ops

log = logging.getLogger("llm_limits")

COUNTERS = ("gemma3", "count_tokens", "bytes")  # google_ai_model_limits.token_counter

# Gemma's chat template around the text: "<bos>" once and the open "<start_of_turn>model\n"
# (1 + 3 tokens), and "<start_of_turn>user\n" ... "<end_of_turn>\n" per turn (5 tokens).
TEMPLATE_REQUEST_TOKENS = 4
TEMPLATE_TURN_TOKENS = 5
# Parts are tokenized one by one; the server sees them joined, and a merge across the seam
# can save a token there, never cost one. One token per part keeps the sum an upper bound.
PART_SLACK_TOKENS = 1

# The SDK knows Gemini models by name but not Gemma; this Gemini model maps to the same
# Gemma 3 SentencePiece model in the SDK, so its LocalTokenizer is Gemma 3's.
GEMMA3_SDK_MODEL = "gemini-2.0-flash"
LOAD_WAIT_SECONDS = 20.0  # the first call waits this long for a download, later ones never
RELOAD_AFTER_SECONDS = 600.0  # a failed load is tried again after this long

# --- the byte bound --------------------------------------------------------------------------
# Gemini and Gemma tokenize with SentencePiece with byte fallback, so every token stands for at
# least one byte of UTF-8 text; a text of N bytes never yields more than N tokens. Media parts
# have no byte bound: each is charged a flat MEDIA_PART_TOKENS (eight 258-token image tiles).

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
    """The byte bound: never below what Google counts, but 4-7x above it for prose."""
    return (
        BASE_TOKENS + ITEM_TOKENS + _cost(contents) + config_bound(config, system_instruction=True)
    )


def config_bound(config: types.GenerateContentConfig | None, *, system_instruction: bool) -> int:
    """The byte bound of what a config adds to the prompt and an exact counter did not count.

    ``count_tokens`` on the Gemini API sends only ``contents``; the local tokenizer counts
    ``system_instruction`` but not Python-function tools or JSON schemas.
    """
    if config is None:
        return 0
    extras = [config.tools, config.response_schema, config.response_json_schema]
    if system_instruction:
        extras.append(config.system_instruction)
    return sum(ITEM_TOKENS + _cost(extra) for extra in extras if extra is not None)


# --- the template around counted text ---------------------------------------------------------


def _is_turn(item: Any) -> bool:
    if isinstance(item, types.Content):
        return True
    return isinstance(item, Mapping) and ("parts" in item or "role" in item)


def _shape(contents: Any) -> tuple[int, int]:
    """(turns, parts) of ``contents`` as the SDK groups them: a run of loose parts is one turn."""
    items = list(contents) if isinstance(contents, (list, tuple)) else [contents]
    turns = parts = 0
    loose = False
    for item in items:
        if _is_turn(item):
            turns += 1
            raw = item.parts if isinstance(item, types.Content) else item.get("parts")
            parts += len(raw) if isinstance(raw, (list, tuple)) else 1
            loose = False
        else:
            turns += 0 if loose else 1
            parts += len(item) if isinstance(item, (list, tuple)) else 1
            loose = True
    return max(turns, 1), max(parts, 1)


def template_tokens(contents: Any, config: types.GenerateContentConfig | None = None) -> int:
    """What the chat template and part seams add to a text-only count of ``contents``."""
    turns, parts = _shape(contents)
    if config is not None and config.system_instruction is not None:
        turns, parts = turns + 1, parts + 1
    return TEMPLATE_REQUEST_TOKENS + TEMPLATE_TURN_TOKENS * turns + PART_SLACK_TOKENS * parts


# --- the local tokenizer ----------------------------------------------------------------------


def sdk_model_for(api_model: str, counter: str | None) -> str | None:
    """The model name to give ``LocalTokenizer`` for ``api_model``, or None if none serves it."""
    if counter not in (None, "gemma3"):
        return None
    name = api_model.lower().removeprefix("models/")
    if name.startswith("gemma-3"):
        return GEMMA3_SDK_MODEL
    try:
        from google.genai import _local_tokenizer_loader as loader

        tokenizer = loader.get_tokenizer_name(name)
    except Exception:  # no sentencepiece, or a model the SDK does not know
        tokenizer = None
    if tokenizer == "gemma3":
        return name
    return GEMMA3_SDK_MODEL if counter == "gemma3" else None


class _Loader:
    """One ``LocalTokenizer`` per SDK model name, loaded in the background at first need."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, Any] = {}
        self._loading: dict[str, threading.Event] = {}
        self._failed: dict[str, float] = {}

    def get(self, sdk_model: str, wait: float) -> Any:
        """The tokenizer, or None if it is not loaded within ``wait`` seconds or failed."""
        with self._lock:
            if sdk_model in self._ready:
                return self._ready[sdk_model]
            if time.monotonic() < self._failed.get(sdk_model, 0.0):
                return None
            done = self._loading.get(sdk_model)
            if done is None:
                done = self._loading[sdk_model] = threading.Event()
                # A daemon thread: the SDK's download has no timeout, and a hung one must
                # neither hold a call past ``wait`` nor keep the process alive.
                threading.Thread(
                    target=self._load, args=(sdk_model, done), daemon=True, name="llm-limits-tok"
                ).start()
        done.wait(wait)
        with self._lock:
            return self._ready.get(sdk_model)

    def _load(self, sdk_model: str, done: threading.Event) -> None:
        try:
            from google.genai.local_tokenizer import LocalTokenizer

            tokenizer: Any = LocalTokenizer(model_name=sdk_model)
        except Exception as exc:  # ImportError, no network, a corrupt download (hash check)
            log.warning(
                "local tokenizer for %s unavailable (%s: %s); counting with count_tokens or "
                "the byte bound, trying again in %.0f s",
                sdk_model, type(exc).__name__, str(exc)[:300], RELOAD_AFTER_SECONDS,
            )  # fmt: skip
            tokenizer = None
        with self._lock:
            if tokenizer is None:
                self._failed[sdk_model] = time.monotonic() + RELOAD_AFTER_SECONDS
            else:
                self._ready[sdk_model] = tokenizer
            del self._loading[sdk_model]
        done.set()


_LOADER = _Loader()  # one per process: the SDK caches the parsed model per process too


def reset_local_tokenizers() -> None:
    """Forget loaded and failed local tokenizers, e.g. after seeding the SDK's cache."""
    global _LOADER
    _LOADER = _Loader()


@dataclass(frozen=True)
class Count:
    tokens: int
    counter: str  # which of COUNTERS produced it


class TokenCounter:
    """The counting chain for one client (see the module doc); thread-safe."""

    def __init__(self, load_wait: float = LOAD_WAIT_SECONDS, ttl: float = 300.0) -> None:
        self.load_wait, self.ttl = load_wait, ttl
        self._models: dict[str, tuple[str, str | None, float]] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    def local(
        self, sdk_model: str, contents: Any, config: types.GenerateContentConfig | None
    ) -> int | None:
        """Count with the local tokenizer, template included; None if it cannot."""
        tokenizer = _LOADER.get(sdk_model, self.load_wait)
        if tokenizer is None:
            return None
        extra: dict[str, Any] = {}
        if config is not None and config.system_instruction is not None:
            extra["system_instruction"] = config.system_instruction
        try:
            counted = tokenizer.count_tokens(contents, config=types.CountTokensConfig(**extra))
        except Exception as exc:  # media parts and the like: not text it can count
            self._once(sdk_model, "local", "local tokenizer cannot count this request: %s", exc)
            return None
        total = int(counted.total_tokens or 0) + template_tokens(contents, config)
        return total + config_bound(config, system_instruction=False)

    def plan(
        self,
        model: str,
        contents: Any,
        config: types.GenerateContentConfig | None,
        google: genai.Client | None,
    ) -> ops.Plan[Count]:
        """Count ``contents`` for ``model`` with the first counter of the chain that works."""
        api_model, counter = yield from self._model_counter(model)
        sdk_model = sdk_model_for(api_model, counter)
        if sdk_model is not None:
            tokens = yield ops.Call(self.local, (sdk_model, contents, config))
            if tokens is not None:
                return Count(tokens, "gemma3")
        if counter in (None, "gemma3", "count_tokens") and google is not None:
            try:
                result = yield ops.Google(
                    google, "count_tokens", {"model": api_model, "contents": contents}
                )
                total = int(result.total_tokens) + config_bound(config, system_instruction=True)
                return Count(total, "count_tokens")
            except Exception as exc:  # never fail the call because of counting
                self._once(api_model, "count_tokens", "count_tokens failed: %s", exc)
        self._once(
            api_model, "bytes", "counting %s input tokens with the byte bound (4-7x too high)", None
        )
        return Count(estimate_tokens(contents, config), "bytes")

    def _model_counter(self, model: str) -> ops.Plan[tuple[str, str | None]]:
        """(api_model, token_counter) from the model's row, cached for ``ttl`` seconds."""
        with self._lock:
            cached = self._models.get(model)
        if cached is not None and time.monotonic() < cached[2]:
            return cached[0], cached[1]
        try:
            row = yield db.token_counter(model)
        except Exception as exc:  # an unknown model fails in acquire; an old schema lacks it
            self._once(model, "token_counter", "token_counter() failed, choosing: %s", exc)
            return model, None
        api_model, counter = row.api_model, row.token_counter
        with self._lock:
            self._models[model] = (api_model, counter, time.monotonic() + self.ttl)
        return api_model, counter

    def _once(self, model: str, what: str, message: str, exc: BaseException | None) -> None:
        with self._lock:
            if (model, what) in self._warned:
                return
            self._warned.add((model, what))
        if exc is None:
            log.warning(message, model)
        else:
            log.warning("%s: " + message, model, f"{type(exc).__name__}: {str(exc)[:300]}")
