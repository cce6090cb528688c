"""Reading a batch's input: which items are valid, and each item's id.

An item is one of

* a prompt (``str``): its id is derived from the prompt, ``p:`` and 16 hex digits of its
  SHA-256, so the id survives a reordered, filtered or extended dataset; the k-th repeat of the
  same prompt gets ``#k`` (k >= 2), so identical prompts are separate items;
* a mapping with ``"prompt"`` and optionally ``"id"`` (derived as above when absent);
* an ``(id, prompt)`` pair (tuple or list).

An id is a ``str`` (1 to 200 characters) or an ``int``. Ids compare by value and type, so
``1`` and ``"1"`` are two ids. Bad input is never sent and never raised: each bad item becomes a
``Rejected`` with a message, in its place, and the other items run. The first item with an id
keeps it; a later one with the same id is rejected, as is an empty (or whitespace-only) prompt
and a prompt that is not a ``str``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_ID_CHARS = 200


@dataclass(frozen=True)
class Item:
    index: int
    id: str | int
    key: str  # the id as the checkpoint keys it
    prompt: str
    digest: str  # SHA-256 of the prompt: a checkpointed answer is for this prompt only


@dataclass(frozen=True)
class Rejected:
    index: int
    id: Any
    error: str


def digest_of(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def key_of(item_id: str | int) -> str:
    """The checkpoint's key for an id: its JSON text, so 1 and "1" stay apart."""
    return json.dumps(item_id, ensure_ascii=False)


def _type(value: object) -> str:
    return type(value).__name__


def _split(raw: object) -> tuple[bool, object, object]:
    """(id given, id, prompt) of one raw item; raises TypeError for an unknown shape."""
    if isinstance(raw, str):
        return False, None, raw
    if isinstance(raw, Mapping):
        if "prompt" not in raw:
            raise TypeError("a dict item needs a 'prompt' key")
        return "id" in raw, raw.get("id"), raw["prompt"]
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        return True, raw[0], raw[1]
    raise TypeError(
        "an item is a prompt (str), a dict with 'prompt' (and 'id'), or an (id, prompt) pair; "
        f"got {_type(raw)}"
    )


def _id_problem(item_id: object) -> str | None:
    if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
        return f"id must be a str or an int, got {_type(item_id)}"
    if isinstance(item_id, str) and not 0 < len(item_id) <= MAX_ID_CHARS:
        return f"id must be 1 to {MAX_ID_CHARS} characters, got {len(item_id)}"
    return None


def read_items(raw_items: Iterable[object]) -> list[Item | Rejected]:
    """Every input item, in order, as an ``Item`` to run or a ``Rejected`` with its reason."""
    out: list[Item | Rejected] = []
    owner: dict[str, int] = {}  # key -> index of the item that holds it
    repeats: dict[str, int] = {}  # derived id -> how many times it has been handed out
    for index, raw in enumerate(raw_items):
        try:
            given, item_id, prompt = _split(raw)
        except TypeError as exc:
            out.append(Rejected(index, None, str(exc)))
            continue
        if not isinstance(prompt, str):
            out.append(Rejected(index, item_id, f"prompt must be a str, got {_type(prompt)}"))
            continue
        digest = digest_of(prompt)
        if not given:
            base = "p:" + digest[:16]
            repeats[base] = repeats.get(base, 0) + 1
            item_id = base if repeats[base] == 1 else f"{base}#{repeats[base]}"
        problem = _id_problem(item_id)
        if problem is not None:
            out.append(Rejected(index, item_id, problem))
            continue
        assert isinstance(item_id, (str, int))
        key = key_of(item_id)
        if key in owner:
            out.append(
                Rejected(index, item_id, f"duplicate id {item_id!r}: item {owner[key]} has it")
            )
            continue
        owner[key] = index
        if not prompt.strip():
            out.append(Rejected(index, item_id, "empty prompt"))
            continue
        out.append(Item(index, item_id, key, prompt, digest))
    return out
