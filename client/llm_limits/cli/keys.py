"""``llm-limits keys …``: the key pool (aliases, and the env vars that hold the keys)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries
from llm_limits.cli.common import (
    DbUrl,
    database,
    fail,
    stdout,
)
from llm_limits.keys import LOCAL_ALIAS_VAR, LOCAL_KEY_VAR

keys_app = typer.Typer(help="The key pool: aliases and the env vars that hold the keys.")
Alias = Annotated[str, typer.Argument(help="The key's alias (see `llm-limits keys list`).")]


def held_here(alias: str, env_var: str) -> str:
    """Where this machine holds the key's value, never the value itself."""
    if os.environ.get(LOCAL_KEY_VAR, "").strip() and (
        os.environ.get(LOCAL_ALIAS_VAR, "").strip() == alias
    ):
        return f"yes ({LOCAL_KEY_VAR})"
    if os.environ.get(env_var, "").strip():
        return f"yes (${env_var})"
    return "no"


@keys_app.command("list")
def keys_list(db_url: DbUrl = None) -> None:
    """The key pool, and whether this machine holds each key (never the key itself)."""
    with database(db_url) as conn:
        rows = conn.execute(queries.LIST_KEYS).fetchall()
    if not rows:
        print("no keys; add one with `llm-limits keys add ALIAS --env-var NAME`")
        return
    table = Table()
    for col in ("alias", "group", "priority", "active", "env var", "held here", "notes"):
        table.add_column(col, no_wrap=col != "notes")
    for r in rows:
        active = (
            Text("yes", style="green")
            if r["is_active"]
            else Text(f"no: {r['disabled_reason'] or 'disabled'}", style="red")
        )
        here = held_here(r["key_alias"], r["env_var_name"])
        table.add_row(
            r["key_alias"],
            r["quota_group"] or Text("(own)", style="dim"),
            str(r["priority"]),
            active,
            r["env_var_name"],
            Text(here, style="green" if here != "no" else "dim"),
            r["notes"] or "",
        )
    stdout().print(table)


@keys_app.command("add")
def keys_add(
    alias: Annotated[str, typer.Argument(help="Unique name of the key, e.g. kaggle-1.")],
    env_var: Annotated[
        str, typer.Option("--env-var", help="Env var (or Kaggle secret) holding the key.")
    ],
    group: Annotated[
        str | None,
        typer.Option("--group", help="Quota group: the Cloud project. Default: its own group."),
    ] = None,
    priority: Annotated[int, typer.Option(help="Lower is tried first.")] = 100,
    notes: Annotated[str | None, typer.Option(help="Free text.")] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Update the key if the alias exists.")
    ] = False,
    db_url: DbUrl = None,
) -> None:
    """Register a key by alias; its value stays in the environment."""
    params = {
        "alias": alias,
        "env_var": env_var,
        "group": group or None,
        "priority": priority,
        "notes": notes,
    }
    with database(db_url) as conn:
        row = conn.execute(
            queries.ADD_OR_UPDATE_KEY if exist_ok else queries.ADD_KEY, params
        ).fetchone()
    if row is None:
        fail(f"key {alias!r} already exists; change it with `llm-limits keys set` or --exist-ok")
    print(f"key {alias} -> ${env_var}, group {group or '(own)'}, priority {priority}")


@keys_app.command("enable")
def keys_enable(
    alias: Alias,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
    db_url: DbUrl = None,
) -> None:
    """Put a key back into the pool (public.enable_key)."""
    with database(db_url) as conn:
        conn.execute(queries.ENABLE_KEY, {"alias": alias, "reason": reason})  # LL009: explained
    print(f"key {alias} enabled")


@keys_app.command("disable")
def keys_disable(
    alias: Alias,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
    db_url: DbUrl = None,
) -> None:
    """Take a key out of the pool (public.disable_key; audited as key_disabled)."""
    with database(db_url) as conn:
        row = conn.execute(queries.DISABLE_KEY, {"alias": alias, "reason": reason}).fetchone()
    was = "" if row and row["was_active"] else " (it was already disabled)"
    print(f"key {alias} disabled{was}")


@keys_app.command("set")
def keys_set(
    alias: Alias,
    group: Annotated[
        str | None, typer.Option(help='New quota group; "" makes the key its own group.')
    ] = None,
    priority: Annotated[int | None, typer.Option(help="New priority.")] = None,
    env_var: Annotated[str | None, typer.Option("--env-var", help="New env var name.")] = None,
    notes: Annotated[str | None, typer.Option(help='New notes; "" clears them.')] = None,
    db_url: DbUrl = None,
) -> None:
    """Change a key's group, priority, env var or notes."""
    if group is None and priority is None and env_var is None and notes is None:
        fail("nothing to change: give --group, --priority, --env-var or --notes")
    params = {
        "alias": alias,
        "group_given": group is not None,
        "group": group,
        "priority": priority,
        "env_var": env_var,
        "notes_given": notes is not None,
        "notes": notes,
    }
    with database(db_url) as conn:
        row = conn.execute(queries.SET_KEY, params).fetchone()
    if row is None:
        fail(f"unknown key {alias!r}")
    print(f"key {alias} updated")
