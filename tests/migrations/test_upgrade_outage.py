"""Upgrading a live database to outage cooldowns and learn_limits = 'apply' by default
(migrations 20261206000500 and 20261206000510).

The database is built from the migrations before them with the real `supabase db push` and
filled as a bot leaves it: settled calls, a group cooling down after a 429, a call still on its
way to Google. Then the full set is pushed. Afterwards every row is still there (the windows
gain the outage columns, starting closed), the catalog equals the schema files', the call in
flight settles into the new failure count, and the settings row's learn_limits is what the
migration promises: 'apply' where the old default was never chosen, the operator's choice
where the audit shows one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from llm_limits.local import localstack
from tests.conftest import create_database, drop_database
from tests.migrations.conftest import assert_same_catalog
from tests.migrations.test_upgrade import (
    REPO,
    Rows,
    all_rows,
    assert_every_row_kept,
    migrations_before,
    push,
)
from tests.support import Conn, acquire, add_key, add_model, commit

OUTAGE = "20261206000500"
UNAVAILABLE = Jsonb({"error": {"code": 503, "status": "UNAVAILABLE"}})


def fill(conn: Conn, chose_suggest: bool) -> dict[str, object]:
    """A bot's traffic before outage cooldowns, one call still in flight."""
    add_model(conn, "ou-model", rpm=30, tpm=50_000, rpd=1000, api="ou-model-it")
    add_key(conn, "ou-a", group="ou-project")
    add_key(conn, "ou-b", group="ou-other")
    if chose_suggest:
        # An operator tried apply and went back: a choice the audit keeps.
        conn.execute("update public.google_ai_settings set learn_limits = 'apply'")
        conn.execute("update public.google_ai_settings set learn_limits = 'suggest'")
    done = acquire(conn, "ou-model", 300, key_aliases=["ou-a"])
    commit(conn, done[1], 250, 40)
    limited = acquire(conn, "ou-model", 300, key_aliases=["ou-b"])
    conn.execute(
        "select * from public.settle(%s, 429, %s)",
        (limited[1], Jsonb({"error": {"code": 429, "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "600s"}]}})),
    )  # fmt: skip
    failed = acquire(conn, "ou-model", 300, key_aliases=["ou-a"])
    conn.execute("select * from public.settle(%s, 503, %s)", (failed[1], UNAVAILABLE))
    open_grant = acquire(conn, "ou-model", 500, key_aliases=["ou-a"])
    assert open_grant[0]
    return {"open": open_grant[1]}


@pytest.fixture(params=[False, True], ids=["suggest-untouched", "suggest-chosen"])
def upgraded(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Rows, dict[str, object], bool]]:
    chose_suggest: bool = request.param
    url = create_database(template=None, prefix="upgrade23")
    try:
        localstack.bootstrap(url)
        first = push(url, migrations_before(tmp_path, OUTAGE))
        assert OUTAGE not in first
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            ids = fill(conn, chose_suggest)
            before = all_rows(conn)
        output = push(url, REPO)
        assert f"Applying migration {OUTAGE}_create_outage_cooldown.sql" in output
        yield url, before, ids, chose_suggest
    finally:
        drop_database(url)


def test_live_rows_upgrade_to_outage_cooldowns_and_applied_limits(
    upgraded: tuple[str, Rows, dict[str, object], bool], schema_files_url: str, tmp_path: Path
) -> None:
    url, before, ids, chose_suggest = upgraded
    want = "suggest" if chose_suggest else "apply"
    [settings] = before["public.google_ai_settings"]
    assert settings["learn_limits"] == "suggest"
    settings["learn_limits"] = want  # the one value the upgrade may change
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        assert_every_row_kept(before, all_rows(conn))
        windows = conn.execute(
            "select quota_group, failures_in_a_row, outage_cooldown_ms, cooldown_reason"
            " from public.google_ai_quota_state where model = 'ou-model' order by 1"
        ).fetchall()
        # Windows start closed; the 429's cooldown is kept.
        assert windows == [("ou-other", 0, None, "rate_limited"), ("ou-project", 0, None, None)]
        changes = conn.execute(
            "select actor, details -> 'old' ->> 'learn_limits', details -> 'new' ->> 'learn_limits'"
            " from public.google_ai_audit_records where event = 'config_changed'"
            " and details ->> 'table' = 'google_ai_settings' order by id"
        ).fetchall()
        if chose_suggest:
            assert [c[1:] for c in changes] == [("suggest", "apply"), ("apply", "suggest")]
        else:
            assert [c[1:] for c in changes] == [("suggest", "apply")], "the switch is audited"

        # The call in flight fails: it is the first failure in a row on the new columns.
        verdict = conn.execute(
            "select action, retry from public.settle(%s, 503, %s)", (ids["open"], UNAVAILABLE)
        ).fetchone()
        assert verdict == ("release_sent", True)
        assert conn.execute(
            "select failures_in_a_row from public.google_ai_quota_state"
            " where quota_group = 'ou-project' and model = 'ou-model'"
        ).fetchone() == (1,)

    assert_same_catalog(url, "the upgraded database", schema_files_url, tmp_path / "catalogs")
