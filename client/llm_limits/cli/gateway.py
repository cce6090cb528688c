"""``llm-limits callers …`` and ``llm-limits gateway serve``: the llm-gateway's operator side.

A caller token is made here, shown once, and only its SHA-256 goes to the database
(``public.add_caller``), so neither the table nor a statement log can give it back. Every change
goes through an RPC whose table is audited (``config_changed``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries
from llm_limits.cli.common import DbUrl, stderr, stdout
from llm_limits.cli.connect import CliError, connect, resolve_url

TOKEN_PREFIX = "llmk_"  # recognisable in a secret scanner, and never a Google key (AIza…)
FUNCTION_DIR = Path("supabase") / "functions" / "llm-gateway"

callers_app = typer.Typer(help="Who may call the llm-gateway Edge Function, by token.")
gateway_app = typer.Typer(help="Run the llm-gateway Edge Function locally with Deno.")
callers_app.info.no_args_is_help = gateway_app.info.no_args_is_help = True

Name = Annotated[str, typer.Argument(help="The caller's name (the `caller` in the audit log).")]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@callers_app.command("add")
def callers_add(
    name: Name,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models", "--model", help="Models it may use (repeat or comma-separate); default all."
        ),
    ] = None,
    notes: Annotated[str | None, typer.Option(help="Free text.")] = None,
    db_url: DbUrl = None,
) -> None:
    """Register a caller and print its token, once: only its SHA-256 is stored."""
    allowed = [m.strip() for given in models or [] for m in given.split(",") if m.strip()]
    token = new_token()
    params = {
        "name": name,
        "digest": token_digest(token),
        "models": allowed or None,
        "notes": notes,
    }
    with connect(resolve_url(db_url)) as conn:
        row = conn.execute(queries.ADD_CALLER, params).fetchone()
    if row is None or not row["added"]:
        raise CliError(f"caller {name!r} already exists; revoke it and add another name")
    scope = ", ".join(allowed) if allowed else "every model"
    stderr().print(
        f"caller {name} added ({scope}). Its token, shown only now; keep it as a secret:"
    )
    print(token)


@callers_app.command("list")
def callers_list(db_url: DbUrl = None) -> None:
    """The callers, their models and when each last called (never a token)."""
    with connect(resolve_url(db_url)) as conn:
        rows = conn.execute(queries.LIST_CALLERS).fetchall()
    if not rows:
        print("no callers; add one with `llm-limits callers add NAME`")
        return
    table = Table()
    for col in ("name", "active", "models", "created", "last used", "notes"):
        table.add_column(col, no_wrap=col != "notes")
    for r in rows:
        table.add_row(
            r["name"],
            Text("yes", style="green") if r["active"] else Text("revoked", style="red"),
            ", ".join(r["allowed_models"]) if r["allowed_models"] else "(all)",
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            f"{r['last_used_at']:%Y-%m-%d %H:%M}" if r["last_used_at"] else "never",
            r["notes"] or "",
        )
    stdout().print(table)


@callers_app.command("revoke")
def callers_revoke(name: Name, db_url: DbUrl = None) -> None:
    """Refuse a caller's token from its next request on."""
    with connect(resolve_url(db_url)) as conn:
        row = conn.execute(queries.REVOKE_CALLER, {"name": name}).fetchone()
    if row is None or row["was_active"] is None:
        raise CliError(f"unknown caller {name!r}")
    print(f"caller {name} revoked" + ("" if row["was_active"] else " (it already was)"))


def find_function_dir() -> Path:
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / FUNCTION_DIR / "index.ts").is_file():
            return candidate / FUNCTION_DIR
    raise CliError(f"no {FUNCTION_DIR}/index.ts above the current directory")


def find_deno(function_dir: Path) -> str:
    pinned = function_dir.parents[2] / "node_modules" / ".bin" / "deno"
    found = str(pinned) if pinned.exists() else shutil.which("deno")
    if found is None:
        raise CliError("no deno: run `npm ci` (it is pinned in package.json)")
    return found


def serve_command(function_dir: Path) -> list[str]:
    """The Deno command line that runs the function as the Edge Runtime would."""
    return [
        find_deno(function_dir),
        "run",
        "--quiet",
        "--frozen",
        "--unstable-no-legacy-abort",
        f"--config={function_dir / 'deno.json'}",
        "--allow-net",
        "--allow-env",
        "--allow-sys",
        f"--allow-read={function_dir}",
        str(function_dir / "index.ts"),
    ]


def serve_env(db_url: str, host: str, port: int, google_base_url: str | None) -> dict[str, str]:
    # The function reads LLM_GATEWAY_DB_URL before SUPABASE_DB_URL: set, it wins over both.
    env = dict(os.environ, LLM_GATEWAY_DB_URL=db_url, DENO_SERVE_ADDRESS=f"tcp:{host}:{port}")
    env.setdefault("DENO_NO_UPDATE_CHECK", "1")
    if google_base_url:
        env["GOOGLE_GEMINI_BASE_URL"] = google_base_url
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_local(
    function_dir: Path,
    db_url: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    google_base_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    output: int | object = None,
    timeout: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Start the function with Deno and return once it accepts connections (tests, bench, demo)."""
    env = serve_env(db_url, host, port, google_base_url)
    env.update(extra_env or {})
    proc = subprocess.Popen(
        serve_command(function_dir),
        cwd=function_dir,
        env=env,
        stdout=output,  # type: ignore[arg-type]
        stderr=subprocess.STDOUT if output is not None else None,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"llm-gateway exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise CliError(f"llm-gateway did not listen on {host}:{port} within {timeout:.0f} s")


@gateway_app.command("serve")
def gateway_serve(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    google_base_url: Annotated[
        str | None,
        typer.Option(
            "--google-base-url",
            envvar="GOOGLE_GEMINI_BASE_URL",
            help="Google's API root, e.g. a local fake Gemini; default Google's.",
        ),
    ] = None,
    db_url: DbUrl = None,
) -> None:
    """Run supabase/functions/llm-gateway with Deno (no Docker); keys come from the env vars."""
    function_dir = find_function_dir()
    env = serve_env(resolve_url(db_url), host, port, google_base_url)
    command = serve_command(function_dir)
    stderr().print(f"llm-gateway on http://{host}:{port} (Ctrl-C stops it)")
    sys.stderr.flush()
    # Deno takes this process's place, so a signal to it (Ctrl-C, kill) reaches the function.
    os.chdir(function_dir)
    os.execve(command[0], command, env)
