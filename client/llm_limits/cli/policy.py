"""``llm-limits classes|budgets|fallbacks …``: the caller policy as rows.

Every change is a row in a config table, audited as config_changed by its trigger; acquire()
applies the policy. Nothing here decides anything.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from llm_limits.cli import queries
from llm_limits.cli.common import DbUrl, database, fail, stdout
from llm_limits.cli.models import resolve_model

classes_app = typer.Typer(help="Caller classes: priority, reserves, fallback; who is in which.")
budgets_app = typer.Typer(help="Daily budgets per caller and model (Pacific day).")
fallbacks_app = typer.Typer(help="Fallback chains between models.")

Reserve = Annotated[float | None, typer.Option(min=0.0, max=1.0)]


@classes_app.command("list")
def classes_list(db_url: DbUrl = None) -> None:
    """Every class, best first, with its reserves and the callers in it."""
    with database(db_url) as conn:
        rows = conn.execute(queries.LIST_CLASSES).fetchall()
    table = Table()
    for col in ("class", "priority", "RPM reserve", "TPM reserve", "RPD reserve", "fallback",
                "callers"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"], str(r["priority"]), f"{r['rpm_reserve']:.0%}", f"{r['tpm_reserve']:.0%}",
            f"{r['rpd_reserve']:.0%}", "yes" if r["may_fall_back"] else "no",
            ", ".join(r["callers"]),
        )  # fmt: skip
    stdout().print(table)


@classes_app.command("set")
def classes_set(
    name: Annotated[str, typer.Argument(help="Class name, e.g. interactive.")],
    priority: Annotated[int | None, typer.Option(min=0, max=1000, help="Lower is first.")] = None,
    rpm_reserve: Reserve = None,
    tpm_reserve: Reserve = None,
    rpd_reserve: Reserve = None,
    fallback: Annotated[
        bool | None, typer.Option("--fallback/--no-fallback", help="May fall back.")
    ] = None,
    notes: Annotated[str | None, typer.Option()] = None,
    db_url: DbUrl = None,
) -> None:
    """Create a class or change it. Reserves are fractions of each limit (0.5 = half)."""
    values = {"name": name, "priority": priority, "rpm_reserve": rpm_reserve,
              "tpm_reserve": tpm_reserve, "rpd_reserve": rpd_reserve,
              "may_fall_back": fallback, "notes": notes}  # fmt: skip
    with database(db_url) as conn:
        conn.execute(queries.UPSERT_CLASS, values)
    print(f"class {name} set")


@classes_app.command("assign")
def classes_assign(
    caller: Annotated[str, typer.Argument(help="The caller name acquire() is given.")],
    caller_class: Annotated[str, typer.Argument(metavar="CLASS")],
    login_role: Annotated[
        str | None, typer.Option(help="Pin this database login to the caller.")
    ] = None,
    db_url: DbUrl = None,
) -> None:
    """Put a caller (a bot, a notebook, a gateway caller's name) in a class."""
    with database(db_url) as conn:
        known = {r["name"] for r in conn.execute(queries.LIST_CLASSES).fetchall()}
        if caller_class not in known:
            fail(f"unknown class {caller_class!r} (known: {', '.join(sorted(known))})")
        conn.execute(
            queries.ASSIGN_CALLER,
            {"caller": caller, "class": caller_class, "login_role": login_role},
        )
    print(f"{caller} is in class {caller_class}")


@budgets_app.command("list")
def budgets_list(db_url: DbUrl = None) -> None:
    """Every budget, with what its caller spent today."""
    with database(db_url) as conn:
        rows = conn.execute(queries.LIST_BUDGETS).fetchall()
    table = Table()
    for col in ("caller", "model", "requests today", "input tokens today"):
        table.add_column(col)
    for r in rows:
        req = "unlimited" if r["requests"] is None else f"{r['spent_requests']}/{r['requests']}"
        tok = ("unlimited" if r["input_tokens"] is None
               else f"{r['spent_tokens']:,}/{r['input_tokens']:,}")  # fmt: skip
        table.add_row(r["caller"], r["model"], req, tok)
    stdout().print(table)


@budgets_app.command("set")
def budgets_set(
    caller: Annotated[str, typer.Argument()],
    model: Annotated[str, typer.Argument()],
    requests: Annotated[int | None, typer.Option(min=0, help="Grants a day.")] = None,
    tokens: Annotated[int | None, typer.Option(min=0, help="Input tokens a day.")] = None,
    db_url: DbUrl = None,
) -> None:
    """Cap a caller's requests and input tokens a day on a model."""
    if requests is None and tokens is None:
        fail("nothing to cap: give --requests, --tokens or both")
    with database(db_url) as conn:
        name = resolve_model(conn, model)["model"]
        values = {"caller": caller, "model": name, "requests": requests, "input_tokens": tokens}
        conn.execute(queries.UPSERT_BUDGET, values)
    print(f"{caller} on {name}: requests={requests}, input tokens={tokens} a day")


@budgets_app.command("remove")
def budgets_remove(
    caller: Annotated[str, typer.Argument()],
    model: Annotated[str, typer.Argument()],
    db_url: DbUrl = None,
) -> None:
    """Lift a caller's budget on a model."""
    with database(db_url) as conn:
        name = resolve_model(conn, model)["model"]
        if conn.execute(queries.DELETE_BUDGET, {"caller": caller, "model": name}).rowcount == 0:
            fail(f"{caller} has no budget on {name}")
    print(f"{caller} on {name}: no budget")


@fallbacks_app.command("list")
def fallbacks_list(db_url: DbUrl = None) -> None:
    """Every chain, as acquire() follows it."""
    with database(db_url) as conn:
        rows = conn.execute(queries.LIST_FALLBACKS).fetchall()
    for r in rows:
        print(" -> ".join(r["chain"]))


@fallbacks_app.command("set")
def fallbacks_set(
    model: Annotated[str, typer.Argument()],
    fallback: Annotated[str, typer.Argument()],
    db_url: DbUrl = None,
) -> None:
    """Serve FALLBACK when MODEL would refuse a caller whose class may fall back."""
    with database(db_url) as conn:
        name, other = resolve_model(conn, model)["model"], resolve_model(conn, fallback)["model"]
        if name == other:
            fail("a model cannot fall back on itself")
        conn.execute(queries.UPSERT_FALLBACK, {"model": name, "fallback": other})
    print(f"{name} -> {other}")


@fallbacks_app.command("remove")
def fallbacks_remove(model: Annotated[str, typer.Argument()], db_url: DbUrl = None) -> None:
    """Stop falling back from MODEL."""
    with database(db_url) as conn:
        name = resolve_model(conn, model)["model"]
        if conn.execute(queries.DELETE_FALLBACK, {"model": name}).rowcount == 0:
            fail(f"{name} has no fallback")
    print(f"{name}: no fallback")
