"""``llm-limits``: the operator CLI (typer + rich), kept apart from the thin client.

Nothing here is imported by ``import llm_limits``; the bot never pays for typer, rich or
matplotlib. Every command that talks to a database takes ``--db-url`` (default: the first of
LLM_LIMITS_DB_URL, SUPABASE_DB_URL, DATABASE_URL that is set, else the running local stack in
./.llm-limits/pg). Failures the operator can fix (unreachable database, unknown model or key,
bad input) are one line on stderr and exit code 2.

This module only wires the commands together; each group lives in its own module.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.core
from rich.text import Text

from llm_limits.cli.audit import audit, maintenance_app
from llm_limits.cli.common import explain, stderr
from llm_limits.cli.end_users import end_users_app
from llm_limits.cli.gateway import callers_app, gateway_app
from llm_limits.cli.generate import generate
from llm_limits.cli.keys import keys_app
from llm_limits.cli.local import db_app, local_app
from llm_limits.cli.models import models_app
from llm_limits.cli.policy import budgets_app, classes_app, fallbacks_app
from llm_limits.cli.report import report
from llm_limits.cli.simulate import simulate
from llm_limits.cli.status import status


class _ExplainingGroup(typer.core.TyperGroup):
    """The root group: turns known failures into one line on stderr instead of a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            known = explain(exc)
            if known is None:
                raise
            message, code = known
            stderr().print(Text(f"error: {message}", style="red"), soft_wrap=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=_ExplainingGroup,
    name="llm-limits",
    help="Operate the llm-limits quota controller for the Google AI API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
for sub, name in (
    (local_app, "local"),
    (db_app, "db"),
    (keys_app, "keys"),
    (models_app, "models"),
    (maintenance_app, "maintenance"),
    (callers_app, "callers"),
    (gateway_app, "gateway"),
    (classes_app, "classes"),
    (budgets_app, "budgets"),
    (fallbacks_app, "fallbacks"),
    (end_users_app, "end-users"),
):
    sub.info.no_args_is_help = True
    app.add_typer(sub, name=name)
for command in (status, audit, report, generate, simulate):
    app.command()(command)


def main() -> None:
    app(prog_name="llm-limits")


if __name__ == "__main__":
    main()
