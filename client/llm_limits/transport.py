"""How a call to Google failed on the wire, in the words ``public.settle`` takes.

This is the carrier's own knowledge (which exceptions its HTTP libraries raise), not Google's
rules: those are read by ``settle`` from the status and body. google-genai sends through httpx2
or httpx, and aiohttp for async when it is installed; all are checked, so a switch does not
turn a timeout into a permanent error.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import json


def _classes(names: dict[str, tuple[str, ...]]) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module, attrs in names.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found.extend(getattr(mod, a) for a in attrs if hasattr(mod, a))
    return tuple(found)


TIMEOUTS = (builtins.TimeoutError, asyncio.TimeoutError) + _classes(
    {"httpx2": ("TimeoutException",), "httpx": ("TimeoutException",),
     "aiohttp": ("ServerTimeoutError",)}
)  # fmt: skip
NOT_CONNECTED = (ConnectionRefusedError,) + _classes(
    {"httpx2": ("ConnectError",), "httpx": ("ConnectError",),
     "aiohttp": ("ClientConnectorError",)}
)  # fmt: skip
TRANSPORT_ERRORS = TIMEOUTS + NOT_CONNECTED + (builtins.ConnectionError,) + _classes(
    {"httpx2": ("NetworkError", "RemoteProtocolError"),
     "httpx": ("NetworkError", "RemoteProtocolError"), "aiohttp": ("ClientError",)}
)  # fmt: skip


def transport_error(exc: BaseException, sent: bool) -> str:
    """settle's ``transport_error`` for an exception raised instead of Google's answer."""
    if not sent:
        return "not_sent"
    if isinstance(exc, TIMEOUTS):
        return "timeout"
    if isinstance(exc, NOT_CONNECTED):
        return "connect_failed"
    if isinstance(exc, TRANSPORT_ERRORS):
        return "connection_lost"
    if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, json.JSONDecodeError):
        return "not_sent"  # the SDK refused to build the request
    return "cancelled"  # interrupted, or a failure of our own: it may have reached Google
