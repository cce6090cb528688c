"""Operator tooling for llm-limits. Nothing here is imported by ``import llm_limits``.

``main`` is the ``llm-limits`` console script. It imports the CLI only once it runs, so that
an install without the ``cli`` extra (typer, rich, matplotlib) ends in one line saying what to
install instead of a ``ModuleNotFoundError`` traceback. This module imports none of them.
"""

from __future__ import annotations

import sys

CLI_EXTRA = frozenset({"typer", "click", "rich", "matplotlib"})  # click comes with typer
INSTALL_HINT = "llm-limits needs the cli extra: pip install 'llm-limits[cli]'"
# The CLI's code for a failure the operator can fix (cli.common.EXIT_USAGE), not 1, which
# `simulate` keeps for "a 429 got through".
EXIT_MISSING_EXTRA = 2


def is_missing_extra(exc: ImportError) -> bool:
    """Whether ``exc`` is a module of the cli extra that is not installed."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in CLI_EXTRA


def main() -> None:
    """The ``llm-limits`` console script: the typer app, or the install hint without it."""
    try:
        from llm_limits.cli.app import main as run_app

        run_app()
    except ModuleNotFoundError as exc:
        # Also raised from inside a command: the chart's matplotlib is imported lazily.
        if not is_missing_extra(exc):
            raise
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(EXIT_MISSING_EXTRA) from None
