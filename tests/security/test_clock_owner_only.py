"""No caller can move the clock the RPCs see.

As service_role and as supabase/roles.sql's llm_limits_client, a caller sets
every custom setting the migrations read (found in the migrations, so a new
one is covered automatically) to values that move time forward, and calls
acquire on a model whose RPM and RPD of 1 are used up: it stays refused. It
can neither turn on the owner-only switch, nor replace the clock, nor use the
audit log's trimming flag. The control: with the switch on (the owner's
decision), the very same settings do move time, so the settings tried are the
ones that matter.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from tests.security.test_roles import client_url  # noqa: F401  (fixture)
from tests.support import Conn, acquire, add_key, add_model, sqlstate_of

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def settings_the_rpcs_read() -> set[str]:
    found: set[str] = set()
    for path in MIGRATIONS.glob("*.sql"):
        found |= set(re.findall(r"current_setting\('(llm_limits\.[a-z_]+)'", path.read_text()))
    return found


def forward_values() -> dict[str, str]:
    """A value for every custom setting that would move time forward or unlock a guard."""
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1, minutes=2)
    values = {
        "llm_limits.now": tomorrow.isoformat(),
        "llm_limits.clock_skew": "1 day 2 minutes",
        "llm_limits.trimming_audit": "on",
    }
    unknown = settings_the_rpcs_read() - values.keys()
    assert not unknown, f"give the new setting(s) {unknown} a forward value here"
    return values


def try_to_steer(conn: Conn, model: str) -> None:
    for name, value in forward_values().items():
        conn.execute("select set_config(%s, %s, false)", (name, value))
    conn.execute("set timezone = 'Pacific/Kiritimati'")
    assert acquire(conn, model, 1)[:1] == (False,), "a caller's setting moved the clock"
    assert (
        sqlstate_of(
            lambda: conn.execute("update google_ai_internal.clock_switch set steerable = true")
        )
        == "42501"
    )
    assert (
        sqlstate_of(
            lambda: conn.execute(
                "create or replace function google_ai_internal.clock() returns timestamptz "
                "language sql as $$ select now() + interval '1 day' $$"
            )
        )
        == "42501"
    )
    assert (
        sqlstate_of(lambda: conn.execute("delete from public.google_ai_audit_records")) == "42501"
    )


def used_up(db: Conn, model: str) -> None:
    add_model(db, model, rpm=1, tpm=100000, rpd=1)
    add_key(db, f"key-{model}")
    assert acquire(db, model, 1)[0] is True
    assert acquire(db, model, 1)[0] is False


def test_service_role_cannot_move_the_clock(db: Conn) -> None:
    used_up(db, "m-clock-service")
    db.execute("set role service_role")
    try_to_steer(db, "m-clock-service")
    db.execute("reset role")
    db.execute("reset all")
    assert db.execute("select count(*) from public.google_ai_reservations").fetchone() == (1,)


def test_client_role_cannot_move_the_clock(db: Conn, client_url: str) -> None:  # noqa: F811
    used_up(db, "m-clock-client")
    with psycopg.connect(client_url, autocommit=True, prepare_threshold=None) as conn:
        try_to_steer(conn, "m-clock-client")
    assert db.execute("select count(*) from public.google_ai_reservations").fetchone() == (1,)


@pytest.mark.parametrize("steerable", [False, True])
def test_the_owner_switch_decides(db: Conn, steerable: bool) -> None:
    used_up(db, "m-clock-owner")
    db.execute(
        "update google_ai_internal.clock_switch set steerable = %s where steerable <> %s",
        (steerable, steerable),
    )
    for name, value in forward_values().items():
        db.execute("select set_config(%s, %s, false)", (name, value))
    # Switch on: a day later both the minute and the quota day have rolled over.
    assert acquire(db, "m-clock-owner", 1)[0] is steerable
    flips = db.execute(
        "select count(*) from public.google_ai_audit_log where event = 'config_changed' "
        "and details ->> 'table' = 'clock_switch'"
    ).fetchone()
    assert flips == (1 if steerable else 0,), "turning the switch is audited"
