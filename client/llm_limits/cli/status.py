"""``llm-limits status``: usage against the limits, live with --watch."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live

from llm_limits.cli import queries, render
from llm_limits.cli.common import (
    DbUrl,
    database,
    fail,
    stdout,
)
from llm_limits.cli.connect import Conn


def status_renderable(conn: Conn, console: Console) -> Any:
    settings = conn.execute(queries.SETTINGS).fetchone()
    if settings is None:
        fail("google_ai_settings has no row; are the migrations applied?")
    rows = conn.execute(queries.QUOTA_STATUS).fetchall()
    bars = render.bar_width_for(console.width)
    space = render.storage_line(conn.execute(queries.STORAGE_STATUS).fetchall())
    observed = render.observed_limits_lines(
        conn.execute(queries.OBSERVED_LIMITS).fetchall(), settings["learn_limits"]
    )
    classes = render.class_view(conn.execute(queries.CLASS_STATUS).fetchall())
    parts = [render.status_view(rows, settings, render.utc_now(), bars), classes, space]
    return Group(*parts, *([observed] if observed is not None else []))


def status(
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh live; Ctrl-C exits.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes.")] = 1.0,
    db_url: DbUrl = None,
) -> None:
    """Usage vs limits per quota group and model, cooldowns, resets, in-flight and waiters."""
    out = stdout()
    with database(db_url) as conn:
        if not watch:
            out.print(status_renderable(conn, out))
            return
        try:
            with Live(status_renderable(conn, out), console=out, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(status_renderable(conn, out), refresh=True)
        except KeyboardInterrupt:
            pass
