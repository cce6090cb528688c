"""Helpers for the CLI tests: run `llm-limits` in-process against a real database."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from typer.testing import CliRunner, Result

from llm_limits.cli.app import app

Invoke = Callable[..., Result]


@pytest.fixture
def cli(db_url: str) -> Invoke:
    """``cli("keys", "list")`` runs the command on this test's database."""
    runner = CliRunner()

    def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return runner.invoke(app, [*args, "--db-url", db_url], env=env)

    return invoke


@pytest.fixture
def cli_bare() -> Invoke:
    """The CLI with no --db-url added (for `local` and for bad URLs)."""
    runner = CliRunner()

    def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env)

    return invoke
