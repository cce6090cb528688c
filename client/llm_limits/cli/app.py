"""``llm-limits``: the operator CLI (typer + rich), kept apart from the thin client.

Nothing here is imported by ``import llm_limits``; the bot never pays for typer, rich or
matplotlib. Every command that talks to a database takes ``--db-url`` (default: the first of
LLM_LIMITS_DB_URL, SUPABASE_DB_URL, DATABASE_URL that is set, else the running local stack in
./.llm-limits/pg). Failures the operator can fix (unreachable database, unknown model or key,
bad input) are one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import psycopg
import typer
import typer.core
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries, render
from llm_limits.cli.connect import URL_ENV_VARS, CliError, Conn, connect, one_line, resolve_url
from llm_limits.cli.gateway import callers_app, gateway_app
from llm_limits.errors import LimitsError, from_db_error
from llm_limits.google_errors import TRANSPORT_ERRORS
from llm_limits.keys import LOCAL_ALIAS_VAR, LOCAL_KEY_VAR
from llm_limits.testing import localstack

EXIT_USAGE = 2
AUDIT_EVENTS = (
    "granted",
    "refused",
    "committed",
    "released",
    "rate_limited",
    "expired",
    "config_changed",
    "key_disabled",
)


def stdout() -> Console:
    # Built per call so that the console follows sys.stdout (test runners swap it). A pipe gets
    # a wide console: a table squeezed into 80 columns would fold its numbers.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)


def explain(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for a failure the operator can act on."""
    if isinstance(exc, (CliError, localstack.LocalStackError)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, psycopg.Error):
        ours = from_db_error(exc)
        if ours is not None:
            return str(ours), EXIT_USAGE
        return f"database error: {one_line(exc)}", EXIT_USAGE
    if isinstance(exc, LimitsError):
        return one_line(exc), EXIT_USAGE
    if isinstance(exc, TRANSPORT_ERRORS):
        return f"cannot reach the Gemini API: {type(exc).__name__}: {one_line(exc)}", 1
    if type(exc).__module__.startswith("google.genai"):
        code = getattr(exc, "code", None)
        status = getattr(exc, "status", None)
        message = getattr(exc, "message", None) or one_line(exc)
        return f"Google API error {code} {status}: {one_line(Exception(message))}", 1
    return None


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is now (a live display or a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def show_client_log(level: int = logging.WARNING) -> None:
    """The client's own log lines (retries, 429s) on stderr."""
    logger = logging.getLogger("llm_limits")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("llm_limits: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


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
local_app = typer.Typer(help="The embedded local PostgreSQL 15 (no Docker), ./.llm-limits/pg.")
db_app = typer.Typer(help="Deploy the migrations.")
keys_app = typer.Typer(help="The key pool: aliases and the env vars that hold the keys.")
models_app = typer.Typer(help="Per-model limits and per-group (Cloud project) overrides.")
maintenance_app = typer.Typer(help="Leases, ledger rollup, audit trimming.")
for sub, name in (
    (local_app, "local"),
    (db_app, "db"),
    (keys_app, "keys"),
    (models_app, "models"),
    (maintenance_app, "maintenance"),
    (callers_app, "callers"),
    (gateway_app, "gateway"),
):
    sub.info.no_args_is_help = True
    app.add_typer(sub, name=name)

DbUrl = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        envvar=list(URL_ENV_VARS),
        show_envvar=True,
        help="Postgres URL of the Supabase database; falls back to the running local stack.",
    ),
]
StackDir = Annotated[
    Path, typer.Option("--dir", help="Where the local cluster lives.", show_default=True)
]
Alias = Annotated[str, typer.Argument(help="The key's alias (see `llm-limits keys list`).")]
ProjectDir = Annotated[
    Path | None,
    typer.Option(
        "--project",
        help="The repository (holds supabase/migrations); default: found "
        "above the current directory.",
    ),
]


@contextmanager
def database(db_url: str | None) -> Iterator[Conn]:
    with connect(resolve_url(db_url)) as conn:
        yield conn


def fail(message: str) -> NoReturn:
    raise CliError(message)


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


# -- local --------------------------------------------------------------------------------------


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


# -- db -----------------------------------------------------------------------------------------


@db_app.command("push")
def db_push(db_url: DbUrl = None, project: ProjectDir = None) -> None:
    """Deploy supabase/migrations to --db-url with `supabase db push`."""
    url = resolve_url(db_url)
    print(push_summary(localstack.push(url, project_dir(project))))


# -- keys ---------------------------------------------------------------------------------------


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
def keys_enable(alias: Alias, db_url: DbUrl = None) -> None:
    """Put a key back into the pool."""
    with database(db_url) as conn:
        row = conn.execute(queries.ENABLE_KEY, {"alias": alias}).fetchone()
    if row is None:
        fail(f"unknown key {alias!r}")
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


# -- models -------------------------------------------------------------------------------------


def resolve_model(conn: Conn, model: str) -> dict[str, Any]:
    row = conn.execute(queries.RESOLVE_MODEL, {"model": model}).fetchone()
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


# -- status -------------------------------------------------------------------------------------


def status_renderable(conn: Conn, console: Console) -> Any:
    settings = conn.execute(queries.SETTINGS).fetchone()
    if settings is None:
        fail("google_ai_settings has no row; are the migrations applied?")
    rows = conn.execute(queries.QUOTA_STATUS).fetchall()
    bars = render.bar_width_for(console.width)
    space = render.storage_line(conn.execute(queries.STORAGE_STATUS).fetchall())
    return Group(render.status_view(rows, settings, render.utc_now(), bars), space)


@app.command()
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


# -- audit --------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime) -> datetime:
    """``10m``, ``1h``, ``2d`` ago, or an ISO timestamp (local time when it has no zone)."""
    match = _DURATION.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--since expects 10m, 1h, 2d or an ISO timestamp, got {value!r}")
    return ts.astimezone() if ts.tzinfo is None else ts


def parse_events(given: list[str] | None) -> list[str] | None:
    if not given:
        return None
    events = [e.strip() for item in given for e in item.split(",") if e.strip()]
    unknown = [e for e in events if e not in AUDIT_EVENTS]
    if unknown:
        fail(f"unknown event {unknown[0]!r}; one of {', '.join(AUDIT_EVENTS)}")
    return events


@app.command()
def audit(
    since: Annotated[
        str | None, typer.Option(help="Only rows since: 10m, 1h, 2d or an ISO timestamp.")
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="Only these events (repeatable).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new rows.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    interval: Annotated[float, typer.Option(min=0.1, help="Poll interval with --follow.")] = 1.0,
    db_url: DbUrl = None,
) -> None:
    """Recent audit rows: time, event, key, model, reservation, details."""
    events = parse_events(event)
    since_ts = parse_since(since, render.utc_now()) if since else None
    out = stdout()
    with_date = since_ts is None or render.utc_now() - since_ts > timedelta(hours=20)
    with database(db_url) as conn:
        page = conn.execute(
            queries.AUDIT_PAGE, {"since": since_ts, "events": events, "limit": limit}
        ).fetchall()
        page.reverse()
        out.print(render.audit_header(with_date))
        for row in page:
            out.print(render.audit_line(row, with_date), soft_wrap=True)
        if not follow:
            if not page:
                out.print(Text("no audit rows match", style="dim"))
            return
        seen = {row["id"]: row["ts"] for row in page}
        horizon = page[-1]["ts"] if page else since_ts or render.utc_now()
        try:
            while True:
                time.sleep(interval)
                # Rows become visible at commit, not in id order: re-read a short overlap.
                overlap = horizon - timedelta(seconds=30)
                rows = conn.execute(
                    queries.AUDIT_SINCE, {"since": overlap, "events": events}
                ).fetchall()
                for row in rows:
                    if row["id"] in seen:
                        continue
                    seen[row["id"]] = row["ts"]
                    out.print(render.audit_line(row, with_date), soft_wrap=True)
                    horizon = max(horizon, row["ts"])
                seen = {i: ts for i, ts in seen.items() if ts >= overlap}
        except KeyboardInterrupt:
            pass


# -- generate and simulate ----------------------------------------------------------------------


@app.command()
def generate(
    model: Annotated[str, typer.Argument(help="Model name or API id, e.g. gemma-3-27b.")],
    prompt: Annotated[str, typer.Argument(help="The prompt (one user turn).")],
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once when over the limit.")
    ] = False,
    max_wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for quota (WAIT mode).")
    ] = 30.0,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            envvar="GOOGLE_GEMINI_BASE_URL",
            help="Gemini API endpoint, e.g. a local fake server.",
        ),
    ] = None,
    caller: Annotated[str, typer.Option(help="Caller name for the audit log.")] = "llm-limits-cli",
    db_url: DbUrl = None,
) -> None:
    """One call through llm_limits.Client; prints the reply, and the usage on stderr."""
    from llm_limits import Client, Usage

    show_client_log()
    url = resolve_url(db_url)
    with connect(url) as conn:
        resolve_model(conn, model)
    used: list[Usage] = []
    started = time.monotonic()
    with Client(dsn=url, base_url=base_url, on_usage=used.append, caller=caller) as client:
        response = client.generate(
            model, prompt, mode="NO_WAIT" if no_wait else "WAIT", max_wait=max_wait
        )
    print(response.text or "")
    took = time.monotonic() - started
    if used:
        u = used[-1]
        stderr().print(
            f"key {u.key_alias} · {u.prompt_tokens} prompt + {u.completion_tokens} completion "
            f"tokens · {took:.2f}s · reservation {u.reservation_id[:8]}",
            style="dim",
        )


@app.command()
def simulate(
    workers: Annotated[int, typer.Option(min=1, help="Concurrent callers (threads).")] = 8,
    duration: Annotated[float, typer.Option(min=1, help="Seconds to run.")] = 60.0,
    model: Annotated[str, typer.Option(help="Model to call.")] = "gemma-3-27b",
    fake_port: Annotated[
        int, typer.Option("--fake-port", min=0, help="Port of the in-process fake (0: free).")
    ] = 0,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Use this Gemini endpoint instead of an in-process fake."),
    ] = None,
    latency: Annotated[
        float, typer.Option(min=0, help="Seconds the in-process fake takes per call.")
    ] = 0.3,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="NO_WAIT calls; sleep retry_after on refusal.")
    ] = False,
    max_wait: Annotated[
        float | None,
        typer.Option(min=0, help="WAIT budget per call, seconds; default: until the run ends."),
    ] = None,
    chart: Annotated[Path, typer.Option(help="Where to write the PNG chart.")] = Path(
        ".llm-limits/simulate.png"
    ),
    db_url: DbUrl = None,
    prompt_chars: Annotated[
        str | None,
        typer.Option(help="Prose prompts of MIN-MAX characters (e.g. 8000-30000): TPM-bound."),
    ] = None,
    language: Annotated[str, typer.Option(help="Prose language: ru or en.")] = "ru",
) -> None:
    """A load run through the real client against a fake Gemini; exit 1 if any 429 got through.

    Reports grants, refusals, waits (p50/p95), tokens, the fake server's 429s and the
    utilization of what the limits allowed, and writes a chart of grants per rolling window.
    """
    from contextlib import nullcontext

    from llm_limits import Client
    from llm_limits.cli import chart as charts
    from llm_limits.cli import simulate as sim

    if base_url and fake_port:
        fail("give --fake-port or --base-url, not both")
    show_client_log()
    url = resolve_url(db_url)
    with connect(url) as conn:
        setup = sim.read_setup(conn, resolve_model(conn, model))
    tally = sim.Tally()
    caller = sim.new_caller()
    prompts = sim.prose_prompts(prompt_chars, language) if prompt_chars else None
    err = stderr()
    server = nullcontext(None) if base_url else sim.fake_server(setup, latency, fake_port)
    with server as fake:
        endpoint = base_url or (fake.base_url if fake else None)
        err.print(
            f"simulate: {workers} workers × {duration:g}s on {setup.model} against {endpoint} "
            f"({'in-process fake' if fake else 'external server'}); groups: "
            + ", ".join(f"{g} ({len(setup.projects[g])} keys)" for g in setup.groups)
        )
        client = Client(
            dsn=url,
            base_url=endpoint,
            on_usage=sim.on_usage_recorder(tally, setup),
            caller=caller,
            timeout=max(30.0, latency * 10),
        )
        view = progress_view(setup, tally, fake, duration)
        with client, Live(view(0.0), console=err, auto_refresh=False, transient=False) as live:
            started, elapsed, interrupted = sim.run_workers(
                client,
                setup,
                tally,
                workers=workers,
                duration=duration,
                wait=not no_wait,
                max_wait=max_wait,
                caller=caller,
                tick=lambda t: live.update(view(t), refresh=True),
                prompt=prompts,
            )
        stats = fake.stats() if fake else None
    with connect(url) as conn:
        waits = sim.waits_of(conn, caller, started)
        if stats is not None:
            fake_429s = stats.rate_limited
            by_project = {
                p: [g.ts for g in grants]
                for (p, m), grants in stats.grants.items()
                if m in (setup.model, setup.api_model)
            }
        else:
            fake_429s = sim.rate_limited_in_db(conn, setup.model, started)
            by_project = sim.grants_from_ledger(conn, setup.model, caller, started)
    chart_path = charts.write_chart(
        chart,
        title=f"{setup.model}: grants per rolling {setup.window_s:g} s window vs the limit",
        grants=by_project,
        limits={g: setup.group_rpm.get(g) for g in setup.groups},
        start=started,
        end=started + elapsed,
        window_s=setup.window_s,
    )
    t = tally
    print()
    print(f"simulate report: {setup.model}, {workers} workers, {elapsed:.1f}s, "
          f"window {setup.window_s:g}s (+{setup.guard_s:g}s guard)")  # fmt: skip
    refusals = ", ".join(f"{r}={n}" for r, n in sorted(t.refusals.items())) or "none"
    errors = ", ".join(f"{e}={n}" for e, n in sorted(t.errors.items())) or "none"
    if interrupted:
        print("interrupted: the figures cover the run until Ctrl-C")
    print(f"grants: {t.total_grants}")
    print(f"refusals: {sum(t.refusals.values())} ({refusals})")
    print(f"errors: {sum(t.errors.values())} ({errors})")
    if t.cut_off:
        print(f"still waiting for quota when the run ended: {t.cut_off}")
    print(sim.summarize_waits(waits))
    print(f"tokens: {t.prompt_tokens:,} prompt + {t.completion_tokens:,} completion")
    print(f"429s: {fake_429s}")
    if stats is None:
        print("  (429s as reported to the database by the client; the server is not ours)")
    windows = sim.windows_begun(elapsed, setup.window_s)
    print(f"utilization = grants / (rpm × {windows} windows begun):")
    for line in sim.usage_lines(t.grants, setup.group_rpm, setup.groups, elapsed, setup.window_s):
        print(line)
    print(f"TPM used = Google-counted input tokens / (tpm × {windows} windows begun):")
    for line in sim.usage_lines(
        t.group_tokens, setup.group_tpm, setup.groups, elapsed, setup.window_s
    ):
        print(line)
    if setup.overridden and fake is not None:
        print(f"  note: {', '.join(setup.overridden)} have their own limits; the fake applies "
              f"the model's")  # fmt: skip
    print(f"chart: {chart_path}")
    if interrupted:
        raise typer.Exit(130)
    if fake_429s > 0:
        raise typer.Exit(1)


def progress_view(setup: Any, tally: Any, fake: Any, duration: float) -> Any:
    """A function of elapsed seconds giving the live progress panel of ``simulate``."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar

    def view(elapsed: float) -> Group:
        now = time.time()
        with tally.lock:
            grants, refused = tally.total_grants, sum(tally.refusals.values())
            errors, in_flight = sum(tally.errors.values()), tally.in_flight
            windows = {g: tally.in_window(g, now, setup.window_s) for g in setup.groups}
        line = Text(f"{min(elapsed, duration):5.1f}/{duration:g}s  ")
        line.append(f"grants {grants}  refusals {refused}  errors {errors}  in flight {in_flight}")
        if fake is not None:
            n429 = fake.stats().rate_limited
            line.append(f"  429s {n429}", style="red" if n429 else "green")
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=duration, completed=min(elapsed, duration), width=30), line)
        parts: list[Any] = [head]
        for group, used in windows.items():
            row = Text(f"  {group:<24} ")
            row.append_text(render.usage(used, setup.group_rpm.get(group), width=20))
            row.append(f"  in the last {setup.window_s:g}s", style="dim")
            parts.append(row)
        return Group(*parts)

    return view


# -- maintenance --------------------------------------------------------------------------------


@maintenance_app.command("run")
def maintenance_run(db_url: DbUrl = None) -> None:
    """One maintenance pass (public.run_maintenance); prints its log row."""
    with database(db_url) as conn:
        row = conn.execute(queries.RUN_MAINTENANCE).fetchone()
    log_row = row["log_row"] if row else None
    stdout().print_json(json.dumps(log_row, default=str))


def main() -> None:
    app(prog_name="llm-limits")


if __name__ == "__main__":
    main()
