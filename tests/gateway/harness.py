"""Running the llm-gateway in a test: Deno runs the Edge Function against a test database as
the least-privilege role `llm_limits_gateway` (supabase/roles.sql), in front of a fake Gemini.

Shared by the gateway's end-to-end tests and the conformance runner.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google import genai
from google.genai import types

from llm_limits.cli.gateway import FUNCTION_DIR, free_port, new_token, start_local, token_digest
from llm_limits.local import localstack

from ..client.support import KEYS, Conn

ROOT = Path(__file__).resolve().parents[2]
ROLES_SQL = ROOT / "supabase" / "roles.sql"


@dataclass
class Gateway:
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    secrets: list[str] = field(default_factory=list)  # must never reach a log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sdk(self, token: str, **headers: str) -> genai.Client:
        options = types.HttpOptions(
            base_url=self.url,
            api_version="v1beta",
            timeout=30_000,
            headers=headers or None,
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        return genai.Client(api_key=token, http_options=options)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def role_url(db_url: str, role: str) -> str:
    """``db_url`` as one of supabase/roles.sql's roles, the file applied first (the test
    cluster trusts local connections, so no password is checked; the roles are cluster-wide
    and stay, their grants go with the database)."""
    localstack.psql(db_url, ROLES_SQL.read_text())
    return db_url.replace("postgresql://postgres@", f"postgresql://{role}:unused@")


def add_caller(db: Conn, name: str, models: list[str] | None = None) -> str:
    token = new_token()
    db.execute(
        "select public.add_caller(%s::text, %s::bytea, %s::text[])",
        (name, token_digest(token), models),
    )
    return token


def launch(
    db_url: str, google_base_url: str, held: tuple[str, ...], log_path: Path, **env: Any
) -> Gateway:
    """The gateway on a free port, as `llm_limits_gateway`, holding the keys `held`."""
    keys = {KEYS[alias][0]: KEYS[alias][2] for alias in held}
    port = free_port()
    with log_path.open("wb") as out:
        proc = start_local(
            ROOT / FUNCTION_DIR,
            role_url(db_url, "llm_limits_gateway"),
            port=port,
            google_base_url=google_base_url,
            extra_env={**keys, **{k: str(v) for k, v in env.items()}},
            output=out.fileno(),
        )
    return Gateway(f"http://127.0.0.1:{port}", log_path, proc)
