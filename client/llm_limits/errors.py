"""Exceptions of llm-limits.

Google's own errors are not wrapped: after the last attempt they reach the caller as the SDK's
``google.genai.errors.APIError`` subclasses (``ClientError``, ``ServerError``). An RPC that
rejects its input raises ``RpcError`` with the database's SQLSTATE (class LL); what each code
means is documented once, in the migrations' SQLSTATE table.
"""

from __future__ import annotations

import psycopg


class LimitsError(Exception):
    """Base class of every error llm-limits raises itself."""


class ConfigurationError(LimitsError):
    """The client is missing configuration (no database URL, for example)."""


class DatabaseError(LimitsError):
    """The quota database failed in a way that is not one of our SQLSTATEs."""


class DatabaseUnavailable(DatabaseError):
    """The quota database cannot be reached, and was still unreachable at the call's deadline
    (a call with no wait budget retries for a couple of seconds). The client fails closed:
    without a grant, Google is not called."""


class NoKeyAvailable(LimitsError):
    """This process holds no usable key for the model (none resolved, or all disabled)."""


class UnsupportedByModel(LimitsError):
    """The request asks for a feature the model rejects (JSON mode or tools on Gemma)."""


class RateLimited(LimitsError):
    """acquire() refused: a NO_WAIT refusal, or a WAIT that ran out of time. ``reason`` is the
    database's (rpm, tpm, rpd, cooldown, wait_timeout, caller_budget, end_user_limit, ...);
    ``retry_after`` is the number of seconds until the binding limit frees, or None when it is
    unknown or never comes (an end user who is blocked)."""

    def __init__(self, reason: str, retry_after: float | None) -> None:
        self.reason, self.retry_after = reason, retry_after
        after = "" if retry_after is None else f"; retry after {retry_after:.3f}s"
        super().__init__(f"rate limited ({reason}{after})")


class RpcError(LimitsError):
    """An RPC rejected its input: ``sqlstate`` is one of ours (LL001 unknown model, LL003
    request larger than TPM, ...), with the database's message, DETAIL and HINT."""

    def __init__(
        self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None
    ) -> None:
        self.sqlstate, self.message, self.detail, self.hint = sqlstate, message, detail, hint
        detail_text, hint_text = f" ({detail})" if detail else "", f" Hint: {hint}" if hint else ""
        super().__init__(f"{sqlstate}: {message}{detail_text}{hint_text}")


def from_db_error(exc: psycopg.Error) -> RpcError | None:
    """Our exception for a database error raised with one of our SQLSTATEs (LL...), else None."""
    state, diag = exc.sqlstate or "", exc.diag
    if not state.startswith("LL"):
        return None
    return RpcError(state, diag.message_primary or str(exc), diag.message_detail, diag.message_hint)
