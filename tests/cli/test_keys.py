"""`llm-limits keys`: rows change as asked, and no key value is ever printed."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.cli.conftest import Invoke

Conn = psycopg.Connection[tuple[Any, ...]]
SECRET = "AIzaSy-distinctive-test-value-8c1f2e"


def key_row(db: Conn, alias: str) -> tuple[Any, ...] | None:
    return db.execute(
        "select env_var_name, quota_group, priority, is_active, disabled_reason, notes "
        "from public.google_ai_api_keys where key_alias = %s",
        (alias,),
    ).fetchone()


def test_add_list_disable_enable_set(cli: Invoke, db: Conn) -> None:
    added = cli("keys", "add", "proj-a-1", "--env-var", "KEY_A1", "--group", "proj-a",
                "--priority", "5", "--notes", "first key")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert cli("keys", "add", "solo", "--env-var", "KEY_SOLO").exit_code == 0
    assert key_row(db, "proj-a-1") == ("KEY_A1", "proj-a", 5, True, None, "first key")
    assert key_row(db, "solo") == ("KEY_SOLO", None, 100, True, None, None)

    listed = cli("keys", "list", env={"KEY_A1": None, "KEY_SOLO": None})
    assert listed.exit_code == 0, listed.output
    assert "proj-a-1" in listed.stdout and "solo" in listed.stdout
    assert "proj-a" in listed.stdout and "(own)" in listed.stdout

    disabled = cli("keys", "disable", "proj-a-1", "--reason", "API_KEY_INVALID")
    assert disabled.exit_code == 0, disabled.output
    assert key_row(db, "proj-a-1")[3:5] == (False, "API_KEY_INVALID")  # type: ignore[index]
    audited = db.execute(
        "select details ->> 'reason' from public.google_ai_audit_log "
        "where event = 'key_disabled' and key_alias = 'proj-a-1'"
    ).fetchall()
    assert audited == [("API_KEY_INVALID",)]
    assert "no: API_KEY_INVALID" in cli("keys", "list").stdout

    assert cli("keys", "enable", "proj-a-1").exit_code == 0
    assert key_row(db, "proj-a-1")[3:5] == (True, None)  # type: ignore[index]

    changed = cli("keys", "set", "solo", "--group", "proj-a", "--priority", "7",
                  "--env-var", "KEY_SOLO_2")  # fmt: skip
    assert changed.exit_code == 0, changed.output
    assert key_row(db, "solo") == ("KEY_SOLO_2", "proj-a", 7, True, None, None)
    assert cli("keys", "set", "solo", "--group", "").exit_code == 0
    assert key_row(db, "solo")[1] is None  # type: ignore[index]


def test_list_shows_who_holds_a_key_but_never_its_value(cli: Invoke) -> None:
    cli("keys", "add", "held", "--env-var", "LLT_HELD_KEY")
    cli("keys", "add", "local", "--env-var", "LLT_NOT_SET")
    cli("keys", "add", "missing", "--env-var", "LLT_MISSING")
    env = {
        "LLT_HELD_KEY": SECRET,
        "LLT_NOT_SET": None,
        "LLT_MISSING": None,
        "GOOGLE_API_KEY": SECRET + "-local",
        "GOOGLE_API_LOCALNAME": "local",
    }
    listed = cli("keys", "list", env=env)
    assert listed.exit_code == 0, listed.output
    assert SECRET not in listed.output
    assert SECRET[:12] not in listed.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in listed.stdout.splitlines()]
    held_here = {row[0]: row[5] for row in cells if len(row) == 7}
    assert held_here["held"] == "yes ($LLT_HELD_KEY)"
    assert held_here["local"] == "yes (GOOGLE_API_KEY)"
    assert held_here["missing"] == "no"


def test_add_twice_is_an_error_unless_exist_ok(cli: Invoke, db: Conn) -> None:
    assert cli("keys", "add", "k1", "--env-var", "A").exit_code == 0
    again = cli("keys", "add", "k1", "--env-var", "B")
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "Traceback" not in again.output
    assert cli("keys", "add", "k1", "--env-var", "B", "--group", "g", "--exist-ok").exit_code == 0
    assert key_row(db, "k1")[:2] == ("B", "g")  # type: ignore[index]


def test_unknown_key_is_a_one_line_error(cli: Invoke) -> None:
    for args in (("disable", "nope"), ("enable", "nope"), ("set", "nope", "--priority", "1")):
        result = cli("keys", *args)
        assert result.exit_code == 2, result.output
        assert "unknown key" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
