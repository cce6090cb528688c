"""Every parameter of every RPC, fed bad and borderline values.

Each case says exactly what must happen: one of our SQLSTATEs (LL0xx), a
clean Postgres error raised while casting the argument before our code runs
(22P02 invalid_text_representation, 22003 numeric_value_out_of_range, 22007
invalid_datetime_format), or a success with a known result for values that
are legitimately valid (for a set-returning RPC, its number of rows). After
every failing call, all rows of all our tables (the audit log aside) are
unchanged. Successful calls run in a rolled-back transaction, so every case
starts from the same state.

Arguments are sent the way the thin client sends them: named, with explicit
casts (`public.fn(name => %s::type, ...)`).

What settle reads out of Google's answers (a 429's quotaId and retryDelay, the
reason a refused key is disabled for) gets the same treatment in
test_bad_google_answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import create_database, drop_database
from tests.support import (
    Conn,
    add_key,
    add_model,
    commit,
    set_now,
    settle,
    snapshot,
    sqlstate_of,
    too_many,
)

T = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
NEXT_PACIFIC_MIDNIGHT = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
MAX_INT = 2**31 - 1
SQLI = "'; drop table public.google_ai_api_keys; --"
HUGE = "x" * 100_000
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
# Placeholders for reservations made by the fixture.
OPEN, COMMITTED, RELEASED, RATE_LIMITED = "<open>", "<committed>", "<released>", "<rate_limited>"


def key_refused(reason: str) -> dict[str, object]:
    """A 400 that refuses the key itself, with the ErrorInfo reason given."""
    return {"error": {"code": 400, "details": [{"@type": ERROR_INFO, "reason": reason}]}}


ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
SETTLE = "select * from public.settle(%s::uuid, %s::int, %s::jsonb, %s::text)"


@dataclass(frozen=True)
class Ok:
    """The call succeeds and returns this (acquire: (granted, reason))."""

    result: Any


SIGNATURES: dict[str, list[tuple[str, str, object]]] = {
    # rpc: [(parameter, cast, default value used when another one is under test)]
    "acquire": [
        ("model", "text", "bad-model"),
        ("tokens", "integer", 10),
        ("mode", "text", "NO_WAIT"),
        ("max_wait_ms", "integer", 0),
        ("key_aliases", "text[]", None),
        ("caller", "text", "tests"),
        ("request_id", "text", None),
        ("ticket", "uuid", None),
        ("end_user", "text", None),
    ],
    "disable_key": [("key_alias", "text", "k1"), ("reason", "text", "tests")],
    "settle": [
        ("reservation_id", "uuid", OPEN),
        ("http_status", "integer", 200),
        ("response", "jsonb", None),
        ("transport_error", "text", None),
    ],
    # Set-returning RPCs: a success is the number of rows they return.
    "batch_outlook": [
        ("model", "text", "bad-model"),
        ("key_aliases", "text[]", None),
        ("caller", "text", "tests"),
    ],
    "request_outcomes": [("request_ids", "text[]", ["r-open"])],
    "limit_end_user": [
        ("end_user", "text", "tg:1"),
        ("rpm", "integer", None),
        ("rpd", "integer", None),
        ("notes", "text", None),
    ],
    "block_end_user": [("end_user", "text", "tg:1"), ("notes", "text", None)],
    "unblock_end_user": [("end_user", "text", "tg:1")],
    "end_user_label": [("end_user", "text", "tg:1")],
    "usage_report": [
        ("since", "timestamptz", "2026-02-28 00:00+00"),
        ("until", "timestamptz", "2026-03-02 00:00+00"),
        ("by", "text", "caller"),
    ],
}
SET_RETURNING = {"batch_outlook", "request_outcomes", "usage_report"}

GRANT, NO_KEY = Ok((True, None)), Ok((False, "no_key"))
# limit_end_user and end_user_label answer the person's label, 8 hex digits of a hash under a
# per-install key: its length is compared.
LABEL = Ok(8)
COMMIT = Ok(("commit", False))

CASES: list[tuple[str, str, str, object, str | Ok]] = [
    # (rpc, parameter, label, value, expected)
    ("acquire", "model", "null", None, "LL001"),
    ("acquire", "model", "empty", "", "LL001"),
    ("acquire", "model", "unknown", "no-such-model", "LL001"),
    ("acquire", "model", "api id", "bad-model-api", GRANT),
    ("acquire", "model", "sql-like", SQLI, "LL001"),
    ("acquire", "model", "201 chars", "m" * 201, "LL007"),
    ("acquire", "model", "100k chars", HUGE, "LL007"),
    ("acquire", "model", "wrong type (int)", 12345, "LL001"),
    ("acquire", "tokens", "null", None, "LL002"),
    ("acquire", "tokens", "negative", -1, "LL002"),
    ("acquire", "tokens", "min int", -(2**31), "LL002"),
    ("acquire", "tokens", "zero", 0, GRANT),
    # The fixture's window holds 25 tokens of TPM 1000 (open 10, committed 5,
    # released 0, rate-limited 10).
    ("acquire", "tokens", "the headroom", 975, GRANT),
    ("acquire", "tokens", "headroom + 1 (a refusal)", 976, Ok((False, "tpm"))),
    ("acquire", "tokens", "exactly TPM (a refusal)", 1000, Ok((False, "tpm"))),
    ("acquire", "tokens", "TPM + 1", 1001, "LL003"),
    ("acquire", "tokens", "max int", MAX_INT, "LL003"),
    ("acquire", "tokens", "2^31 (cast)", 2**31, "22003"),
    ("acquire", "tokens", "wrong type", "abc", "22P02"),
    ("acquire", "tokens", "fraction", "1.5", "22P02"),
    ("acquire", "mode", "null", None, "LL004"),
    ("acquire", "mode", "empty", "", "LL004"),
    ("acquire", "mode", "unknown", "maybe", "LL004"),
    ("acquire", "mode", "lower case", "no_wait", GRANT),
    ("acquire", "mode", "padded", " WAIT", "LL004"),
    ("acquire", "mode", "sql-like", SQLI, "LL004"),
    ("acquire", "mode", "100k chars", HUGE, "LL004"),
    ("acquire", "mode", "WAIT", "WAIT", GRANT),
    ("acquire", "max_wait_ms", "null", None, "LL007"),
    ("acquire", "max_wait_ms", "negative", -1, "LL007"),
    ("acquire", "max_wait_ms", "zero", 0, GRANT),
    ("acquire", "max_wait_ms", "a day", 86_400_000, GRANT),
    ("acquire", "max_wait_ms", "a day + 1", 86_400_001, "LL007"),
    ("acquire", "max_wait_ms", "max int", MAX_INT, "LL007"),
    ("acquire", "max_wait_ms", "wrong type", "abc", "22P02"),
    ("acquire", "key_aliases", "null (every key)", None, GRANT),
    ("acquire", "key_aliases", "empty", [], NO_KEY),
    ("acquire", "key_aliases", "unknown", ["nope"], NO_KEY),
    ("acquire", "key_aliases", "null element", [None], NO_KEY),
    ("acquire", "key_aliases", "disabled key", ["k-off"], NO_KEY),
    ("acquire", "key_aliases", "sql-like", [SQLI], NO_KEY),
    ("acquire", "key_aliases", "100k chars", [HUGE], NO_KEY),
    ("acquire", "key_aliases", "1000 entries", ["k1"] + [f"a{i}" for i in range(999)], GRANT),
    ("acquire", "key_aliases", "1001 entries", [f"a{i}" for i in range(1001)], "LL007"),
    ("acquire", "key_aliases", "wrong type", "abc", "22P02"),
    ("acquire", "caller", "null", None, GRANT),
    ("acquire", "caller", "empty", "", GRANT),
    ("acquire", "caller", "sql-like", SQLI, GRANT),
    ("acquire", "caller", "200 chars", "c" * 200, GRANT),
    ("acquire", "caller", "201 chars", "c" * 201, "LL007"),
    ("acquire", "caller", "100k chars", HUGE, "LL007"),
    ("acquire", "caller", "wrong type (int)", 12345, GRANT),
    ("acquire", "request_id", "null", None, GRANT),
    ("acquire", "request_id", "sql-like", SQLI, GRANT),
    ("acquire", "request_id", "200 chars", "r" * 200, GRANT),
    ("acquire", "request_id", "201 chars", "r" * 201, "LL007"),
    ("acquire", "request_id", "100k chars", HUGE, "LL007"),
    ("acquire", "request_id", "wrong type (int)", 12345, GRANT),
    ("acquire", "ticket", "null", None, GRANT),
    ("acquire", "ticket", "a new one (NO_WAIT has no line to keep)", UNKNOWN_ID, GRANT),
    ("acquire", "ticket", "wrong type", "abc", "22P02"),
    ("acquire", "ticket", "sql-like", SQLI, "22P02"),
    ("acquire", "end_user", "null (nobody in particular)", None, GRANT),
    ("acquire", "end_user", "empty", "", "LL007"),
    ("acquire", "end_user", "sql-like", SQLI, GRANT),
    ("acquire", "end_user", "not ASCII", "tg:Ünïcødé ✓", GRANT),
    ("acquire", "end_user", "200 chars", "u" * 200, GRANT),
    ("acquire", "end_user", "201 chars", "u" * 201, "LL007"),
    ("acquire", "end_user", "100k chars", HUGE, "LL007"),
    # A value sent as text is text; the thin client refuses a non-str itself (LL007).
    ("acquire", "end_user", "wrong type (int)", 12345, GRANT),
    ("limit_end_user", "end_user", "null", None, "LL007"),
    ("limit_end_user", "end_user", "empty", "", "LL007"),
    ("limit_end_user", "end_user", "sql-like", SQLI, LABEL),
    ("limit_end_user", "end_user", "201 chars", "u" * 201, "LL007"),
    ("limit_end_user", "end_user", "100k chars", HUGE, "LL007"),
    ("limit_end_user", "rpm", "null (the class's)", None, LABEL),
    ("limit_end_user", "rpm", "zero (none)", 0, LABEL),
    ("limit_end_user", "rpm", "negative", -1, "LL007"),
    ("limit_end_user", "rpm", "wrong type", "abc", "22P02"),
    ("limit_end_user", "rpd", "null (the class's)", None, LABEL),
    ("limit_end_user", "rpd", "negative", -1, "LL007"),
    ("limit_end_user", "notes", "null", None, LABEL),
    ("limit_end_user", "notes", "500 chars", "n" * 500, LABEL),
    ("limit_end_user", "notes", "501 chars", "n" * 501, "LL007"),
    ("block_end_user", "end_user", "null", None, "LL007"),
    ("block_end_user", "end_user", "empty", "", "LL007"),
    ("block_end_user", "end_user", "sql-like", SQLI, Ok(True)),
    ("block_end_user", "end_user", "201 chars", "u" * 201, "LL007"),
    ("block_end_user", "notes", "null", None, Ok(True)),
    ("block_end_user", "notes", "501 chars", "n" * 501, "LL007"),
    ("unblock_end_user", "end_user", "null", None, "LL007"),
    ("unblock_end_user", "end_user", "empty", "", "LL007"),
    ("unblock_end_user", "end_user", "not blocked", "tg:1", Ok(False)),
    ("unblock_end_user", "end_user", "100k chars", HUGE, "LL007"),
    ("end_user_label", "end_user", "null", None, "LL007"),
    ("end_user_label", "end_user", "empty", "", "LL007"),
    ("end_user_label", "end_user", "a person", "tg:1", LABEL),
    ("end_user_label", "end_user", "201 chars", "u" * 201, "LL007"),
    ("disable_key", "key_alias", "null", None, "LL009"),
    ("disable_key", "key_alias", "empty", "", "LL009"),
    ("disable_key", "key_alias", "unknown", "nope", "LL009"),
    ("disable_key", "key_alias", "sql-like", SQLI, "LL009"),
    ("disable_key", "key_alias", "100k chars", HUGE, "LL009"),
    ("disable_key", "key_alias", "wrong type (int)", 12345, "LL009"),
    ("disable_key", "key_alias", "active", "k1", Ok(True)),
    ("disable_key", "key_alias", "already disabled", "k-off", Ok(False)),
    ("disable_key", "reason", "null", None, Ok(True)),
    ("disable_key", "reason", "sql-like", SQLI, Ok(True)),
    ("disable_key", "reason", "500 chars", "r" * 500, Ok(True)),
    ("disable_key", "reason", "501 chars", "r" * 501, "LL007"),
    ("disable_key", "reason", "100k chars", HUGE, "LL007"),
    ("settle", "reservation_id", "null", None, "LL006"),
    ("settle", "reservation_id", "unknown", "00000000-0000-4000-8000-000000000000", "LL006"),
    ("settle", "reservation_id", "wrong type", "abc", "22P02"),
    ("settle", "reservation_id", "sql-like", SQLI, "22P02"),
    ("settle", "reservation_id", "open", OPEN, COMMIT),
    # Settled already: the same answer, and nothing changes.
    ("settle", "reservation_id", "already committed", COMMITTED, COMMIT),
    ("settle", "reservation_id", "released", RELEASED, COMMIT),
    ("settle", "reservation_id", "rate-limited", RATE_LIMITED, COMMIT),
    ("settle", "http_status", "null (and no transport error)", None, "LL007"),
    ("settle", "http_status", "99", 99, "LL007"),
    ("settle", "http_status", "600", 600, "LL007"),
    ("settle", "http_status", "200", 200, COMMIT),
    ("settle", "http_status", "wrong type", "abc", "22P02"),
    ("settle", "response", "null", None, COMMIT),
    ("settle", "response", "not JSON", "abc", "22P02"),
    ("settle", "response", "a scalar", '"text"', COMMIT),
    ("settle", "response", "an empty array", "[]", COMMIT),
    (
        "settle",
        "response",
        "usage not a number",
        '{"usageMetadata": {"promptTokenCount": "x"}}',
        COMMIT,
    ),
    (
        "settle",
        "response",
        "usage negative",
        '{"usageMetadata": {"promptTokenCount": -5, "candidatesTokenCount": -1}}',
        COMMIT,
    ),
    (
        "settle",
        "response",
        "usage the largest sum",
        '{"usageMetadata": {"promptTokenCount": 999999999, "candidatesTokenCount": 999999999}}',
        COMMIT,
    ),
    (
        "settle",
        "response",
        "usage summing past 2^31",
        '{"usageMetadata": {"promptTokenCount": 999999999, "candidatesTokenCount": 999999999,'
        ' "thoughtsTokenCount": 999999999}}',
        "LL002",
    ),
    ("settle", "response", "sql-like modelVersion", '{"modelVersion": "' + SQLI + '"}', COMMIT),
    (
        "settle",
        "response",
        "a 16 kB modelVersion",
        '{"modelVersion": "' + "v" * 16_380 + '"}',
        "LL007",
    ),
    ("settle", "response", "100k chars", '{"modelVersion": "' + HUGE + '"}', "LL007"),
    ("settle", "transport_error", "null", None, COMMIT),
    ("settle", "transport_error", "timeout", "timeout", Ok(("release_sent", True))),
    ("settle", "transport_error", "not_sent", "not_sent", Ok(("release_unsent", False))),
    ("settle", "transport_error", "unknown", "gremlins", "LL007"),
    ("settle", "transport_error", "100k chars", HUGE, "LL007"),
    ("batch_outlook", "model", "null", None, "LL001"),
    ("batch_outlook", "model", "empty", "", "LL001"),
    ("batch_outlook", "model", "unknown", "no-such-model", "LL001"),
    ("batch_outlook", "model", "api id", "bad-model-api", Ok(1)),
    ("batch_outlook", "model", "sql-like", SQLI, "LL001"),
    ("batch_outlook", "model", "100k chars", HUGE, "LL001"),
    ("batch_outlook", "key_aliases", "null (every key)", None, Ok(1)),
    ("batch_outlook", "key_aliases", "empty (no group)", [], Ok(1)),
    ("batch_outlook", "key_aliases", "null element", [None], Ok(1)),
    ("batch_outlook", "key_aliases", "sql-like", [SQLI], Ok(1)),
    ("batch_outlook", "key_aliases", "wrong type", "abc", "22P02"),
    ("batch_outlook", "caller", "null (every caller)", None, Ok(1)),
    ("batch_outlook", "caller", "sql-like", SQLI, Ok(1)),
    ("batch_outlook", "caller", "200 chars", "c" * 200, Ok(1)),
    ("batch_outlook", "caller", "201 chars", "c" * 201, "LL007"),
    ("batch_outlook", "caller", "100k chars", HUGE, "LL007"),
    ("request_outcomes", "request_ids", "null", None, Ok(0)),
    ("request_outcomes", "request_ids", "empty", [], Ok(0)),
    ("request_outcomes", "request_ids", "null element", [None], Ok(0)),
    ("request_outcomes", "request_ids", "sql-like", [SQLI], Ok(0)),
    ("request_outcomes", "request_ids", "a granted one", ["r-open"], Ok(1)),
    ("request_outcomes", "request_ids", "1000 ids", ["r-open"] * 1000, Ok(1)),
    ("request_outcomes", "request_ids", "1001 ids", ["r-open"] * 1001, "LL007"),
    ("request_outcomes", "request_ids", "a 200-char id", ["r" * 200], Ok(0)),
    ("request_outcomes", "request_ids", "a 201-char id", ["r" * 201], "LL007"),
    ("request_outcomes", "request_ids", "wrong type", "abc", "22P02"),
    ("usage_report", "since", "null (7 days before until)", None, Ok(1)),
    ("usage_report", "since", "after until", "2026-03-03 00:00+00", "LL007"),
    ("usage_report", "since", "equal to until", "2026-03-02 00:00+00", "LL007"),
    ("usage_report", "since", "-infinity", "-infinity", Ok(1)),
    ("usage_report", "since", "wrong type", "abc", "22007"),
    ("usage_report", "until", "null (now: the grants at now are not yet in)", None, Ok(0)),
    ("usage_report", "until", "infinity", "infinity", Ok(1)),
    ("usage_report", "until", "before since", "2026-01-01 00:00+00", "LL007"),
    ("usage_report", "until", "wrong type", "abc", "22007"),
    ("usage_report", "by", "null", None, "LL007"),
    ("usage_report", "by", "empty", "", "LL007"),
    ("usage_report", "by", "unknown", "key", "LL007"),
    ("usage_report", "by", "upper case", "MODEL", "LL007"),
    ("usage_report", "by", "sql-like", SQLI, "LL007"),
    ("usage_report", "by", "100k chars", HUGE, "LL007"),
    ("usage_report", "by", "model", "model", Ok(1)),
    ("usage_report", "by", "day", "day", Ok(1)),
    ("usage_report", "by", "class", "class", Ok(1)),
    ("usage_report", "by", "end_user", "end_user", Ok(1)),
]


@pytest.fixture(scope="module")
def bad_db() -> Iterator[tuple[Conn, dict[str, str]]]:
    """One database for all cases: a model, keys, and a reservation in each state."""
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            set_now(conn, T)
            add_model(conn, "bad-model", rpm=100, tpm=1000, rpd=1000, api="bad-model-api")
            add_key(conn, "k1", group="g1")
            add_key(conn, "k-off", group="g2")
            conn.execute("select public.disable_key('k-off', 'setup')")

            def grant() -> str:
                row = conn.execute(
                    "select reservation_id from public.acquire('bad-model', 10, "
                    "request_id => 'r-open')"
                ).fetchone()
                assert row is not None and row[0] is not None
                return str(row[0])

            ids = {OPEN: grant(), COMMITTED: grant(), RELEASED: grant(), RATE_LIMITED: grant()}
            commit(conn, ids[COMMITTED], 5, 1)
            settle(conn, ids[RELEASED], transport_error="not_sent")
            # retryDelay 0s: the cooldown ends at once, grants stay possible.
            settle(conn, ids[RATE_LIMITED], 429, too_many("0s", "Quota"))
            yield conn, ids
    finally:
        drop_database(url)


def call(conn: Conn, rpc: str, args: dict[str, object]) -> Any:
    params = ", ".join(f"{name} => %s::{cast}" for name, cast, _ in SIGNATURES[rpc])
    values = tuple(args[name] for name, _, _ in SIGNATURES[rpc])
    if rpc in SET_RETURNING:
        row = conn.execute(f"select count(*) from public.{rpc}({params})", values).fetchone()
        assert row is not None
        return row[0]
    if rpc in ("acquire", "settle"):
        first_two = "granted, reason" if rpc == "acquire" else "action, retry"
        row = conn.execute(f"select {first_two} from public.{rpc}({params})", values).fetchone()
        assert row is not None
        return tuple(row)
    labelled = ("limit_end_user", "end_user_label")
    answer = "length(public.{}({}))" if rpc in labelled else "public.{}({})"
    row = conn.execute(f"select {answer.format(rpc, params)}", values).fetchone()
    assert row is not None
    return row[0]


def test_every_parameter_has_cases(bad_db: tuple[Conn, dict[str, str]]) -> None:
    """The table covers every parameter of every RPC, each at least with null."""
    conn, _ = bad_db
    declared = {
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            "select p.proname, a.name from pg_proc as p "
            "cross join lateral unnest(p.proargnames, p.proargmodes) as a (name, mode) "
            "where p.pronamespace = 'public'::regnamespace and p.proname = any(%s) "
            "  and coalesce(a.mode, 'i') in ('i', 'b', 'v')",  # parameters, not OUT columns
            (list(SIGNATURES),),
        ).fetchall()
    }
    assert declared == {(rpc, name) for rpc, sig in SIGNATURES.items() for name, _, _ in sig}
    nulls = {(rpc, param) for rpc, param, _, value, _ in CASES if value is None}
    assert nulls == declared


@pytest.mark.parametrize(
    ("rpc", "param", "value", "expected"),
    [
        pytest.param(rpc, param, value, exp, id=f"{rpc}.{param}: {label}")
        for rpc, param, label, value, exp in CASES
    ],
)
def test_bad_input(
    bad_db: tuple[Conn, dict[str, str]], rpc: str, param: str, value: object, expected: str | Ok
) -> None:
    conn, ids = bad_db
    args = {name: default for name, _, default in SIGNATURES[rpc]}
    args[param] = value
    args = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in args.items()}

    if isinstance(expected, Ok):
        with conn.transaction(force_rollback=True):
            assert call(conn, rpc, args) == expected.result
        return

    before = snapshot(conn)
    assert sqlstate_of(lambda: call(conn, rpc, args)) == expected
    assert snapshot(conn) == before


# What Google says in a 429 or a refused key, read by settle: the quota and retry delay a
# cooldown is made of, the reason a key is disabled for. A success is settle's action and the
# cooldown of the fixture's group afterwards (the fixture's 429 left it at T).
GOOGLE_CASES: list[tuple[str, int, dict[str, object], str | Ok]] = [
    ("429 without details (default cooldown)", 429, too_many(None, None), Ok(("rate_limited", T + timedelta(minutes=1)))),
    ("429 retryDelay 0s", 429, too_many("0s", "Quota"), Ok(("rate_limited", T))),
    ("429 retryDelay a day", 429, too_many("86400s", "Quota"), Ok(("rate_limited", T + timedelta(days=1)))),
    ("429 retryDelay past a day (a day)", 429, too_many("90000s", "Quota"), Ok(("rate_limited", T + timedelta(days=1)))),
    ("429 retryDelay negative (ignored)", 429, too_many("-1s", "Quota"), Ok(("rate_limited", T + timedelta(minutes=1)))),
    ("429 retryDelay not a duration", 429, too_many(SQLI, "Quota"), Ok(("rate_limited", T + timedelta(minutes=1)))),
    ("429 per day", 429, too_many("5s", "GenerateRequestsPerDayPerProjectPerModel-FreeTier"), Ok(("rate_limited", NEXT_PACIFIC_MIDNIGHT))),
    ("429 quotaId sql-like", 429, too_many("0s", SQLI), Ok(("rate_limited", T))),
    ("429 quotaId 300 chars", 429, too_many("0s", "q" * 300), Ok(("rate_limited", T))),
    ("429 quotaId 301 chars", 429, too_many("0s", "q" * 301), "LL007"),
    ("429 quotaId 100k chars", 429, too_many("0s", HUGE), "LL007"),
    ("400 key reason 500 chars", 400, key_refused("API_KEY_" + "x" * 492), Ok(("disable_key", T))),
    ("400 key reason 501 chars", 400, key_refused("API_KEY_" + "x" * 493), "LL007"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [pytest.param(status, body, exp, id=label) for label, status, body, exp in GOOGLE_CASES],
)
def test_bad_google_answers(
    bad_db: tuple[Conn, dict[str, str]], status: int, body: dict[str, object], expected: str | Ok
) -> None:
    conn, ids = bad_db
    args = (ids[OPEN], status, Jsonb(body), None)
    if isinstance(expected, Ok):
        with conn.transaction(force_rollback=True):
            row = conn.execute(SETTLE, args).fetchone()
            cooldown = conn.execute(
                "select cooldown_until from public.google_ai_quota_state"
                " where quota_group = 'g1' and model = 'bad-model'"
            ).fetchone()
            assert row is not None and cooldown is not None
            assert (row[0], cooldown[0]) == expected.result
        return

    before = snapshot(conn)
    assert sqlstate_of(lambda: conn.execute(SETTLE, args)) == expected
    assert snapshot(conn) == before
