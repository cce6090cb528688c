"""`llm-limits callers`: the token is printed once and only its digest is stored."""

from __future__ import annotations

import hashlib

from llm_limits.cli.gateway import TOKEN_PREFIX

from ..client.support import Conn
from .conftest import Invoke


def test_add_prints_the_token_once_and_stores_only_its_digest(cli: Invoke, db: Conn) -> None:
    added = cli("callers", "add", "kaggle-eval", "--models", "gemma-3-27b-it,gemini-2.5-flash")
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    row = db.execute(
        "select token_sha256, allowed_models, t::text from public.google_ai_callers as t"
    ).fetchone()
    assert row is not None
    digest, models, whole_row = row
    assert bytes(digest) == hashlib.sha256(token.encode()).digest()
    assert models == ["gemma-3-27b-it", "gemini-2.5-flash"]
    assert token not in whole_row
    audit_rows = db.execute("select details::text from public.google_ai_audit_log").fetchall()
    assert audit_rows and all(token not in text for (text,) in audit_rows)

    listed = cli("callers", "list")
    assert "kaggle-eval" in listed.stdout and token not in listed.stdout


def test_a_second_add_differs_and_a_taken_name_is_refused(cli: Invoke, db: Conn) -> None:
    first = cli("callers", "add", "bot").stdout.strip()
    again = cli("callers", "add", "bot")
    other = cli("callers", "add", "bot-2").stdout.strip()

    assert again.exit_code == 2 and "already exists" in again.output
    assert first != other
    assert db.execute("select count(*) from public.google_ai_callers").fetchone() == (2,)


def test_bad_input_changes_nothing(cli: Invoke, db: Conn) -> None:
    unknown_model = cli("callers", "add", "nb", "--models", "gemma-9-zz")
    bad_name = cli("callers", "add", "два слова")
    unknown_revoke = cli("callers", "revoke", "nobody")

    assert unknown_model.exit_code == 2 and "LL001" in unknown_model.output
    assert bad_name.exit_code == 2 and "LL007" in bad_name.output
    assert unknown_revoke.exit_code == 2 and "unknown caller" in unknown_revoke.output
    assert db.execute("select count(*) from public.google_ai_callers").fetchone() == (0,)
