"""Fixtures of the examples' runs: a migrated database holding the test keys, the fake Gemini,
and a runner that starts one example as a subprocess configured only through the environment
variables the README documents.

The model row pins `token_counter = 'count_tokens'`: the client then counts with the fake's
countTokens instead of first fetching Google's tokenizer model from GitHub, which a test
machine may not reach (counting itself is tested in tests/client/test_token_counting.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_limits.local.fake_gemini import FakeGemini

from ..client.support import GEMMA, KEYS, Conn, insert_keys, projects

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DB_VARS = ("LLM_LIMITS_DB_URL", "SUPABASE_DB_URL", "DATABASE_URL")


@dataclass(frozen=True)
class Run:
    """What an example did: its output, and the ledger rows it left (status, caller)."""

    output: str
    calls: list[tuple[str, str | None]]

    def committed(self, caller: str) -> int:
        return sum(1 for status, who in self.calls if status == "committed" and who == caller)


RunExample = Callable[..., Run]


@pytest.fixture
def keyed_db(db: Conn) -> Conn:
    insert_keys(db)
    db.execute(
        "update public.google_ai_model_limits set token_counter = 'count_tokens' where model = %s",
        (GEMMA,),
    )
    return db


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(projects()) as srv:
        yield srv


@pytest.fixture
def run_example(keyed_db: Conn, db_url: str, fake: FakeGemini, tmp_path: Path) -> RunExample:
    def run(name: str, *args: str, python: str = sys.executable, **env: str) -> Run:
        base = {k: v for k, v in os.environ.items() if k not in DB_VARS and "GOOGLE" not in k}
        keys = {var: value for var, _, value in KEYS.values()}
        proc = subprocess.run(
            [python, str(EXAMPLES / name), *args],
            cwd=tmp_path,  # what a notebook writes (its checkpoint) lands here
            env={**base, **keys, "LLM_LIMITS_DB_URL": db_url,
                 "GOOGLE_GEMINI_BASE_URL": fake.base_url, **env},
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"examples/{name} exited {proc.returncode}:\n{output[-3000:]}"
        rows = keyed_db.execute(
            "select status, caller from public.google_ai_reservations order by granted_at"
        ).fetchall()
        return Run(output, [(status, caller) for status, caller in rows])

    return run
