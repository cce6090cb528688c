"""``llm-limits generate``: one call through the real client."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from llm_limits.cli.common import (
    DbUrl,
    show_client_log,
    stderr,
)
from llm_limits.cli.connect import connect, resolve_url
from llm_limits.cli.models import resolve_model


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
    end_user: Annotated[
        str | None, typer.Option(help="The person the call is for, e.g. tg:123 (end_user).")
    ] = None,
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
        mode = "NO_WAIT" if no_wait else "WAIT"
        response = client.generate(model, prompt, mode=mode, max_wait=max_wait, end_user=end_user)
    print(response.text or "")
    took = time.monotonic() - started
    if used:
        u = used[-1]
        stderr().print(
            f"key {u.key_alias} · {u.prompt_tokens} prompt + {u.completion_tokens} completion "
            f"tokens · {took:.2f}s · reservation {u.reservation_id[:8]}",
            style="dim",
        )
