"""Exceptions of llm-limits, and the one table that maps our SQLSTATEs to them.

Google's own errors are not wrapped: after the last attempt they reach the caller as the SDK's
``google.genai.errors.APIError`` subclasses (``ClientError``, ``ServerError``).
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
    """The quota database cannot be reached (after one reconnect). The client fails closed:
    without a grant, Google is not called."""


class NoKeyAvailable(LimitsError):
    """This process holds no usable key for the model (none resolved, or all disabled)."""


class UnsupportedByModel(LimitsError):
    """The request asks for a feature the model rejects (JSON mode or tools on Gemma)."""


class RateLimited(LimitsError):
    """acquire() refused: a NO_WAIT refusal, or a WAIT that ran out of time.

    ``reason`` is the database's (rpm, tpm, rpd, cooldown, wait_timeout); ``retry_after`` is
    the number of seconds until the binding limit frees, or None when it is unknown.
    """

    def __init__(self, reason: str, retry_after: float | None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        after = "" if retry_after is None else f"; retry after {retry_after:.3f}s"
        super().__init__(f"rate limited ({reason}{after})")


class RpcError(LimitsError):
    """An RPC rejected its input with one of our SQLSTATEs (class LL)."""

    sqlstate = ""

    def __init__(self, message: str, detail: str | None = None, hint: str | None = None) -> None:
        self.message, self.detail, self.hint = message, detail, hint
        text = f"{self.sqlstate}: {message}"
        if detail:
            text += f" ({detail})"
        if hint:
            text += f" Hint: {hint}"
        super().__init__(text)


class UnknownModel(RpcError):
    sqlstate = "LL001"


class InvalidTokens(RpcError):
    sqlstate = "LL002"


class PromptTooLarge(RpcError):
    """The estimated prompt is larger than the TPM of every key this process holds."""

    sqlstate = "LL003"


class InvalidMode(RpcError):
    sqlstate = "LL004"


class InvalidWait(RpcError):
    sqlstate = "LL005"


class UnknownReservation(RpcError):
    sqlstate = "LL006"


class InvalidArgument(RpcError):
    sqlstate = "LL007"


class ReservationSettled(RpcError):
    sqlstate = "LL008"


class UnknownKey(RpcError):
    sqlstate = "LL009"


class AuditAppendOnly(RpcError):
    sqlstate = "LL010"


SQLSTATE_ERRORS: dict[str, type[RpcError]] = {
    cls.sqlstate: cls
    for cls in (
        UnknownModel,
        InvalidTokens,
        PromptTooLarge,
        InvalidMode,
        InvalidWait,
        UnknownReservation,
        InvalidArgument,
        ReservationSettled,
        UnknownKey,
        AuditAppendOnly,
    )
}


def from_db_error(exc: psycopg.Error) -> RpcError | None:
    """Our exception for a database error raised with one of our SQLSTATEs, else None."""
    cls = SQLSTATE_ERRORS.get(exc.sqlstate or "")
    if cls is None:
        return None
    diag = exc.diag
    return cls(diag.message_primary or str(exc), diag.message_detail, diag.message_hint)
