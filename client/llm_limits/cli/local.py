"""``llm-limits local …`` and ``llm-limits db push``: a local stack; deploying the migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import psycopg
import typer

from llm_limits.cli import queries
from llm_limits.cli.common import (
    DbUrl,
    fail,
    stderr,
)
from llm_limits.cli.connect import CliError, connect, resolve_url
from llm_limits.local import localstack

local_app = typer.Typer(help="The embedded local PostgreSQL 15 (no Docker), ./.llm-limits/pg.")
db_app = typer.Typer(help="Deploy the migrations.")

StackDir = Annotated[
    Path, typer.Option("--dir", help="Where the local cluster lives.", show_default=True)
]
ProjectDir = Annotated[
    Path | None,
    typer.Option(
        "--project",
        help="The repository (holds supabase/migrations); default: found "
        "above the current directory.",
    ),
]


def project_dir(given: Path | None) -> Path:
    if given is not None:
        if not (given / "supabase" / "migrations").is_dir():
            fail(f"{given} has no supabase/migrations")
        return given.resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "supabase" / "migrations").is_dir():
            return candidate
    fail(
        "no supabase/migrations above the current directory; run from the repository or "
        "pass --project"
    )


def push_summary(output: str) -> str:
    """One line out of `supabase db push`'s chatter."""
    applied = [
        ln.split()[-1].rstrip(".").removesuffix(".sql")
        for ln in output.splitlines()
        if ln.startswith("Applying migration")
    ]
    if len(applied) == 1:
        return f"applied 1 migration: {applied[0]}"
    if applied:
        return f"applied {len(applied)} migrations: {applied[0]} … {applied[-1]}"
    if "up to date" in output:
        return "migrations: already up to date"
    return "migrations pushed"


@local_app.command("up")
def local_up(
    dir: StackDir = localstack.DEFAULT_DIR,
    project: ProjectDir = None,
    push: Annotated[
        bool, typer.Option("--push/--no-push", help="Deploy supabase/migrations after start.")
    ] = True,
) -> None:
    """Start (or reuse) the local cluster, migrate it, and print its URL. Idempotent."""
    was_running = localstack.LocalCluster(dir.resolve()).running()
    cluster = localstack.up(dir)
    err = stderr()
    state = "already running" if was_running else "started"
    err.print(f"local PostgreSQL {state} in {cluster.root} (port {cluster.port})")
    if push:
        err.print(push_summary(localstack.push(cluster.url(), project_dir(project))))
    print(cluster.url())


@local_app.command("down")
def local_down(
    dir: StackDir = localstack.DEFAULT_DIR,
    remove: Annotated[
        bool, typer.Option("--remove", help="Delete the data directory too.")
    ] = False,
) -> None:
    """Stop the local cluster (and with --remove, delete its data)."""
    cluster = localstack.LocalCluster(dir.resolve())
    running = cluster.running()
    localstack.down(dir, remove=remove)
    what = "stopped" if running else "was not running"
    stderr().print(f"local PostgreSQL {what}" + (f"; removed {cluster.root}" if remove else ""))


@local_app.command("status")
def local_status(dir: StackDir = localstack.DEFAULT_DIR) -> None:
    """Is the local cluster running, where, and how far is it migrated. Exit 3 when stopped."""
    cluster = localstack.LocalCluster(dir.resolve())
    if not cluster.running():
        print(f"stopped ({cluster.root})")
        raise typer.Exit(3)
    line = f"running  {cluster.url()}  ({cluster.root})"
    try:
        with connect(cluster.url()) as conn:
            row = conn.execute(queries.MIGRATIONS).fetchone()
        if row is not None:
            line += f"  migrations: {row['applied']} applied, latest {row['latest']}"
    except (CliError, psycopg.Error):
        line += "  migrations: none"
    print(line)


@local_app.command("url")
def local_url(dir: StackDir = localstack.DEFAULT_DIR) -> None:
    """Print the local cluster's URL."""
    cluster = localstack.LocalCluster(dir.resolve())
    url = cluster.url()
    if not cluster.running():
        stderr().print("warning: the local cluster is not running; `llm-limits local up`")
    print(url)


@db_app.command("push")
def db_push(db_url: DbUrl = None, project: ProjectDir = None) -> None:
    """Deploy supabase/migrations to --db-url with `supabase db push`."""
    url = resolve_url(db_url)
    print(push_summary(localstack.push(url, project_dir(project))))
