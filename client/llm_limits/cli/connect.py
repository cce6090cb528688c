"""Which database the CLI talks to, and the one way it connects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from llm_limits.db import DB_URL_VARS, url_from_env
from llm_limits.local import localstack

Conn = psycopg.Connection[dict[str, Any]]


class CliError(Exception):
    """A failure the CLI reports as one line on stderr, with exit code 2."""


def redact(url: str) -> str:
    """The URL with its password masked, fit for an error message."""
    url = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
    return re.sub(r"(password=)\S+", r"\1***", url)


def local_url(root: Path = localstack.DEFAULT_DIR) -> str | None:
    """The URL of the local stack in ``root`` when it is running, else None."""
    cluster = localstack.LocalCluster(root.resolve())
    try:
        return cluster.url() if cluster.running() else None
    except (OSError, localstack.LocalStackError):
        return None


def resolve_url(given: str | None) -> str:
    """--db-url, then the environment, then the running local stack in ./.llm-limits/pg."""
    url = given or url_from_env() or local_url()
    if url is None:
        raise CliError(
            "no database: pass --db-url, set "
            + ", ".join(DB_URL_VARS[:-1])
            + f" or {DB_URL_VARS[-1]}, or start one with `llm-limits local up`"
        )
    return url


def one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def connect(url: str) -> Conn:
    """An autocommit connection; fit for Supavisor's transaction mode (nothing prepared)."""
    try:
        return psycopg.connect(
            url,
            autocommit=True,
            prepare_threshold=None,
            row_factory=dict_row,
            connect_timeout=10,
            application_name="llm-limits-cli",
        )
    except psycopg.Error as exc:
        # A malformed URL is a ProgrammingError, an unreachable one an OperationalError.
        raise CliError(f"cannot connect to {redact(url)}: {redact(one_line(exc))}") from exc
