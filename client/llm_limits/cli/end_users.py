"""``llm-limits end-users list|limit|block|unblock``: the bot's people, by the keyed hash of
their id.

The operator names a person by the raw id the bot passes as ``end_user`` (``tg:123456``); the
database keeps only its keyed hash and shows a person by the first 8 hex digits of it, as
``report --by end_user`` does. Each change is a row of ``google_ai_end_users``, audited as
config_changed. Nothing here decides anything: acquire() applies the limits.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries, render
from llm_limits.cli.common import DbUrl, database, fail, stdout

end_users_app = typer.Typer(help="The bot's people: per-person limits and blocks.")
EndUser = Annotated[
    str, typer.Argument(metavar="END_USER", help="The id the bot passes as end_user, e.g. tg:42.")
]
Notes = Annotated[str | None, typer.Option(help="Why (kept in the row and the audit log).")]


def limit_text(own: int | None, class_default: str) -> str:
    return class_default if own is None else f"{own:,}"


@end_users_app.command("list")
def end_users_list(
    top: Annotated[int, typer.Option(min=1, help="Show at most this many people.")] = 50,
    db_url: DbUrl = None,
) -> None:
    """People with a rule of their own, or granted or waiting today: blocked first, then by
    grants today."""
    with database(db_url) as conn:
        rows = conn.execute(queries.LIST_END_USERS, {"top": top}).fetchall()
    if not rows:
        print("no end users today, and no rules")
        return
    table = Table()
    for col in ("end user", "RPM", "RPD", "blocked", "today", "in window", "waiting", "notes"):
        table.add_column(col, no_wrap=col != "notes")
    for r in rows:
        table.add_row(
            r["end_user"], limit_text(r["rpm"], "class"), limit_text(r["rpd"], "class"),
            Text("yes", style="red") if r["blocked"] else "no", render.number(r["requests_today"]),
            render.number(r["requests_in_window"]), render.number(r["waiting"]), r["notes"] or "",
        )  # fmt: skip
    stdout().print(table)


@end_users_app.command("limit")
def end_users_limit(
    end_user: EndUser,
    rpm: Annotated[int | None, typer.Option(min=0, help="Grants a minute (0: none).")] = None,
    rpd: Annotated[int | None, typer.Option(min=0, help="Grants a Pacific day.")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Back to the class's limits.")] = False,
    notes: Notes = None,
    db_url: DbUrl = None,
) -> None:
    """Give one person their own limits, across models, in place of their class's."""
    if reset == (rpm is not None or rpd is not None):
        fail("give --rpm, --rpd or both, or --reset")
    values = {"end_user": end_user, "rpm": rpm, "rpd": rpd, "notes": notes}
    with database(db_url) as conn:
        row = conn.execute(queries.LIMIT_END_USER, values).fetchone()
    assert row is not None
    shown = "the class's" if reset else f"rpm={rpm}, rpd={rpd} (none: the class's)"
    print(f"end user {row['label']}: {shown}")


@end_users_app.command("block")
def end_users_block(end_user: EndUser, notes: Notes = None, db_url: DbUrl = None) -> None:
    """Refuse one person every call (end_user_limit), at no cost to the pool."""
    with database(db_url) as conn:
        values = {"end_user": end_user, "notes": notes}
        row = conn.execute(queries.BLOCK_END_USER, values).fetchone()
    assert row is not None
    print(f"end user {row['label']} " + ("blocked" if row["changed"] else "was already blocked"))


@end_users_app.command("unblock")
def end_users_unblock(end_user: EndUser, db_url: DbUrl = None) -> None:
    """Serve a blocked person again, under their limits."""
    with database(db_url) as conn:
        row = conn.execute(queries.UNBLOCK_END_USER, {"end_user": end_user}).fetchone()
    assert row is not None
    if not row["changed"]:
        fail(f"end user {row['label']} is not blocked")
    print(f"end user {row['label']} unblocked")
