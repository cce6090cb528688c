"""How a call to Google failed on the wire, in the words ``public.settle`` takes.

This is the carrier's own knowledge (which exceptions its HTTP libraries raise), not Google's
rules: those are read by ``settle`` from the status and body. google-genai sends through httpx2
or httpx, and aiohttp for async when it is installed; all are checked, so a switch does not
turn a timeout into a permanent error.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json


def _classes(*names: str) -> tuple[type[BaseException], ...]:
    """The exception classes named ``module.Class`` whose module is installed."""
    found: list[type[BaseException]] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), attr))
    return tuple(found)


TIMEOUTS = (TimeoutError, asyncio.TimeoutError) + _classes(
    "httpx2.TimeoutException", "httpx.TimeoutException", "aiohttp.ServerTimeoutError"
)
NOT_CONNECTED = (ConnectionRefusedError,) + _classes(
    "httpx2.ConnectError", "httpx.ConnectError", "aiohttp.ClientConnectorError"
)
TRANSPORT_ERRORS = TIMEOUTS + NOT_CONNECTED + (ConnectionError,) + _classes(
    "httpx2.NetworkError", "httpx.NetworkError", "httpx2.RemoteProtocolError",
    "httpx.RemoteProtocolError", "aiohttp.ClientError",
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
