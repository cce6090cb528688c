"""Read Google's errors: what a 429 says about the quota, and which failures are transient.

``APIError.details`` is the whole JSON body (``{"error": {...}}``), not the details list.
"""

from __future__ import annotations

import builtins
import importlib
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from google.genai import errors

_RETRY_IN = re.compile(r"retry in\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b", re.IGNORECASE)
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s*$")
_MAX_DELAY_MS = 86_400_000  # report_rate_limit accepts up to a day


class QuotaViolation(NamedTuple):
    quota_id: str | None
    retry_delay_ms: int | None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and connection failures of whichever HTTP library the SDK runs on.

    google-genai 3.6 sends through httpx2 by default (httpx when only that is installed, aiohttp
    for async when it is installed); all of them are checked so a switch does not turn a
    timeout into a permanent error.
    """
    found: list[type[BaseException]] = [builtins.TimeoutError, builtins.ConnectionError]
    for module, names in (
        ("httpx2", ("TimeoutException", "NetworkError", "RemoteProtocolError")),
        ("httpx", ("TimeoutException", "NetworkError", "RemoteProtocolError")),
        ("aiohttp", ("ClientError",)),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found.extend(getattr(mod, name) for name in names if hasattr(mod, name))
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


def _error_body(err: errors.APIError) -> Mapping[str, Any]:
    body = err.details
    inner = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(inner, Mapping):
        return inner
    return body if isinstance(body, Mapping) else {}


def _details(err: errors.APIError) -> list[Mapping[str, Any]]:
    items = _error_body(err).get("details")
    return [d for d in items if isinstance(d, Mapping)] if isinstance(items, list) else []


def _of_type(err: errors.APIError, name: str) -> list[Mapping[str, Any]]:
    return [d for d in _details(err) if str(d.get("@type", "")).endswith("google.rpc." + name)]


def _seconds_to_ms(seconds: float) -> int:
    return max(0, min(_MAX_DELAY_MS, round(seconds * 1000)))


def quota_of(err: errors.APIError) -> QuotaViolation:
    """quotaId and retry delay of a 429; either may be None.

    With several violations a per-day one wins: it binds until the next Pacific midnight,
    whatever its own retryDelay says.
    """
    quota_ids = [
        str(v["quotaId"])
        for failure in _of_type(err, "QuotaFailure")
        for v in failure.get("violations") or []
        if isinstance(v, Mapping) and v.get("quotaId")
    ]
    per_day = [q for q in quota_ids if "PerDay" in q]
    preferred = per_day or quota_ids
    quota_id = preferred[0] if preferred else None

    delay_ms: int | None = None
    for info in _of_type(err, "RetryInfo"):
        match = _DURATION.match(str(info.get("retryDelay", "")))
        if match:
            delay_ms = _seconds_to_ms(float(match.group(1)))
            break
    if delay_ms is None:
        match = _RETRY_IN.search(err.message or str(_error_body(err).get("message", "")))
        if match:
            value = float(match.group(1))
            delay_ms = _seconds_to_ms(value / 1000 if match.group(2).lower() == "ms" else value)
    return QuotaViolation(quota_id, delay_ms)


def error_reasons(err: errors.APIError) -> set[str]:
    """The ``ErrorInfo.reason`` values of an error (the llm-gateway's refusals name the pool's
    reason there: ``RPM``, ``RPD``, ``WAIT_TIMEOUT``, ...)."""
    return {str(d.get("reason", "")) for d in _of_type(err, "ErrorInfo") if d.get("reason")}


def key_rejection(err: errors.APIError) -> str | None:
    """Why Google refuses the key itself (invalid or leaked), or None for any other error."""
    message = (err.message or "").lower()
    if err.code == 403 and "reported as leaked" in message:
        return "API_KEY_LEAKED"
    reasons = {str(d.get("reason", "")) for d in _of_type(err, "ErrorInfo")}
    if err.code == 400 and ("API_KEY_INVALID" in reasons or "api key not valid" in message):
        return "API_KEY_INVALID"
    return None


def is_rate_limit(err: errors.APIError) -> bool:
    return err.code == 429


def is_request_invalid(err: BaseException) -> bool:
    """The SDK refused to build the request (TypeError/ValueError), so nothing was sent.

    A JSONDecodeError is a ValueError too, but it comes from reading a response.
    """
    return isinstance(err, (TypeError, ValueError)) and not isinstance(err, json.JSONDecodeError)


def is_transient(err: BaseException) -> bool:
    """A failure that may succeed on another attempt: 5xx, 408, timeouts, connection errors."""
    if isinstance(err, errors.APIError):
        return err.code >= 500 or err.code == 408
    return isinstance(err, TRANSPORT_ERRORS)
