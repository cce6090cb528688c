"""The schema the migrations build equals the committed snapshot,
supabase/schema.sql (normalized pg_dump, grants included; see
scripts/schema-snapshot.sh). A migration that changes the schema changes the
snapshot in the same commit, so reviewers see the resulting DDL and grants,
and any drift (an edited migration, a stray grant) fails here.
"""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO / "supabase" / "schema.sql"
SCRIPT = REPO / "scripts" / "schema-snapshot.sh"
REGENERATE = 'scripts/schema-snapshot.sh --build "$LLM_LIMITS_TEST_ADMIN_URL" > supabase/schema.sql'


def schema_of(url: str) -> str:
    proc = subprocess.run([str(SCRIPT), url], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def assert_matches_snapshot(url: str, what: str) -> None:
    got = schema_of(url)
    want = SNAPSHOT.read_text()
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                got.splitlines(keepends=True),
                "supabase/schema.sql (committed)",
                f"{what} (built from supabase/migrations)",
                n=2,
            )
        )
        raise AssertionError(
            f"the schema built from the migrations differs from supabase/schema.sql.\n"
            f"If the change is intended, regenerate the snapshot and commit it:\n"
            f"    {REGENERATE}\n\n{diff}"
        )


def test_migrations_build_the_committed_schema(db_url: str) -> None:
    assert_matches_snapshot(db_url, "a fresh database")


def test_snapshot_is_deterministic(db_url: str) -> None:
    first = schema_of(db_url)
    assert first == schema_of(db_url)
    assert "\\restrict" not in first and "Dumped from" not in first
