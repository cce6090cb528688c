"""``llm-limits models …``: per-model limits and per-group (Cloud project) overrides."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries, render
from llm_limits.cli.common import (
    DbUrl,
    database,
    fail,
    stdout,
)
from llm_limits.cli.connect import Conn
from llm_limits.errors import from_db_error

models_app = typer.Typer(help="Per-model limits and per-group (Cloud project) overrides.")


def resolve_model(conn: Conn, model: str) -> dict[str, Any]:
    try:
        row = conn.execute(queries.RESOLVE_MODEL, {"model": model}).fetchone()
    except psycopg.Error as exc:
        if from_db_error(exc) is None:
            raise
        row = None
    if row is None:
        known = ", ".join(r["model"] for r in conn.execute(queries.LIST_MODELS).fetchall())
        fail(f"unknown model {model!r} (known: {known or 'none'})")
    return row


@models_app.command("list")
def models_list(db_url: DbUrl = None) -> None:
    """Every model's limits, and the per-group overrides under it."""
    with database(db_url) as conn:
        rows = conn.execute(queries.LIST_MODELS).fetchall()
    table = Table()
    for col in ("model", "API model", "group", "RPM", "TPM", "RPD"):
        table.add_column(col, no_wrap=True, justify="right" if col.isupper() else "left")
    for r in rows:
        table.add_row(
            r["model"],
            r["api_model"] or "",
            Text("(all)", style="dim"),
            render.number(r["rpm"]),
            render.number(r["tpm"]),
            render.number(r["rpd"]),
        )
        for o in r["overrides"]:
            table.add_row(
                "",
                "",
                o["group"],
                *(
                    render.number(o[k]) if o[k] is not None else Text("inherit", style="dim")
                    for k in ("rpm", "tpm", "rpd")
                ),
            )
    stdout().print(table)


@models_app.command("set")
def models_set(
    model: Annotated[str, typer.Argument(help="Model name or API id, e.g. gemma-3-27b.")],
    rpm: Annotated[int | None, typer.Option(min=0, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=0, help="Input tokens per minute.")] = None,
    rpd: Annotated[int | None, typer.Option(min=0, help="Requests per Pacific day.")] = None,
    api_model: Annotated[
        str | None, typer.Option("--api-model", help="The id sent to the API.")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="Set an override for this quota group only (a paid-tier project)."),
    ] = None,
    create: Annotated[
        bool, typer.Option("--create", help="Add the model if it is not known yet.")
    ] = False,
    db_url: DbUrl = None,
) -> None:
    """Set a model's limits (or one group's override). Audited as config_changed."""
    if rpm is None and tpm is None and rpd is None and api_model is None:
        fail("nothing to change: give --rpm, --tpm, --rpd or --api-model")
    limits = {"rpm": rpm, "tpm": tpm, "rpd": rpd}
    with database(db_url) as conn:
        if group is not None:
            if api_model is not None:
                fail("--api-model belongs to the model, not to a group; drop --group")
            name = resolve_model(conn, model)["model"]
            conn.execute(queries.UPSERT_GROUP_LIMITS, {"group": group, "model": name, **limits})
            print(f"{name} for group {group}: {describe(limits)}")
            return
        if create:
            conn.execute(queries.UPSERT_MODEL, {"model": model, "api_model": api_model, **limits})
            name = model
        else:
            name = resolve_model(conn, model)["model"]
            conn.execute(queries.UPDATE_MODEL, {"model": name, "api_model": api_model, **limits})
    print(f"{name}: {describe({**limits, 'api_model': api_model})}")


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)
