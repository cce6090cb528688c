"""What every command shares: the consoles, the --db-url option, failures as one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import psycopg
import typer
from rich.console import Console

from llm_limits.cli.connect import CliError, Conn, connect, one_line, resolve_url
from llm_limits.db import DB_URL_VARS
from llm_limits.errors import LimitsError, from_db_error
from llm_limits.local import localstack
from llm_limits.transport import TRANSPORT_ERRORS

EXIT_USAGE = 2

DbUrl = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        envvar=list(DB_URL_VARS),
        show_envvar=True,
        help="Postgres URL of the Supabase database; falls back to the running local stack.",
    ),
]


def stdout() -> Console:
    # Built per call so that the console follows sys.stdout (test runners swap it). A pipe gets
    # a wide console: a table squeezed into 80 columns would fold its numbers.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for a failure the operator can act on."""
    if isinstance(exc, (CliError, localstack.LocalStackError)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, psycopg.Error):
        ours = from_db_error(exc)
        if ours is not None:
            return str(ours), EXIT_USAGE
        return f"database error: {one_line(exc)}", EXIT_USAGE
    if isinstance(exc, LimitsError):
        return one_line(exc), EXIT_USAGE
    if isinstance(exc, TRANSPORT_ERRORS):
        return f"cannot reach the Gemini API: {type(exc).__name__}: {one_line(exc)}", 1
    if type(exc).__module__.startswith("google.genai"):
        code = getattr(exc, "code", None)
        status = getattr(exc, "status", None)
        message = getattr(exc, "message", None) or one_line(exc)
        return f"Google API error {code} {status}: {one_line(Exception(message))}", 1
    return None


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is now (a live display or a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def show_client_log(level: int = logging.WARNING) -> None:
    """The client's own log lines (retries, 429s) on stderr."""
    logger = logging.getLogger("llm_limits")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("llm_limits: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


@contextmanager
def database(db_url: str | None) -> Iterator[Conn]:
    with connect(resolve_url(db_url)) as conn:
        yield conn


def fail(message: str) -> NoReturn:
    raise CliError(message)
