"""The carriers' row shapes, read from the catalog: they cannot drift from the database again.

``public.acquire`` returns ``public.acquire_result`` and ``public.settle`` a table of its OUT
columns. Both carriers mirror these rows by hand: the Python client as ``db.Grant`` and
``db.Verdict``, the gateway as ``Grant`` and ``Verdict`` in ``supabase/functions/llm-gateway/
db.ts``. Each is compared here with the catalog of a migrated database: the same column names,
in the same order, and a type that carries each column.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from llm_limits import db as client_db
from tests.client.support import Conn

GATEWAY_DB = Path(__file__).resolve().parents[2] / "supabase/functions/llm-gateway/db.ts"

# Postgres type -> (the Python annotation's base type, the TypeScript type).
CARRIED = {
    "boolean": ("bool", "boolean"),
    "uuid": ("uuid.UUID", "string"),
    "text": ("str", "string"),
    "integer": ("int", "number"),
}


def acquire_result_columns(db: Conn) -> list[tuple[str, str]]:
    return [
        (str(name), str(kind))
        for name, kind in db.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod)"
            " from pg_attribute as a"
            " where a.attrelid = 'public.acquire_result'::regclass"
            " and a.attnum > 0 and not a.attisdropped order by a.attnum"
        ).fetchall()
    ]


def settle_columns(db: Conn) -> list[tuple[str, str]]:
    row = db.execute(
        "select p.proargnames, p.proargmodes, p.proallargtypes from pg_proc as p"
        " where p.oid = 'public.settle(uuid, integer, jsonb, text)'::regprocedure"
    ).fetchone()
    assert row is not None
    names, modes, types = row
    return [
        (str(n), str(db.execute("select format_type(%s, null)", (t,)).fetchone()[0]))  # type: ignore[index]
        for n, m, t in zip(names, modes, types, strict=True)
        if m == "t"
    ]


def python_fields(cls: type) -> list[tuple[str, str]]:
    hints = typing.get_type_hints(cls, vars(client_db))
    return [(f.name, str(hints[f.name])) for f in dataclasses.fields(cls)]


def typescript_fields(interface: str) -> list[tuple[str, str]]:
    source = GATEWAY_DB.read_text()
    body = re.search(r"export interface " + interface + r" \{(.*?)\n\}", source, re.S)
    assert body is not None, f"interface {interface} not found in {GATEWAY_DB}"
    return re.findall(r"^\s*(\w+): ([^;]+);", body.group(1), re.M)


def assert_carried(columns: list[tuple[str, str]], python: list[tuple[str, str]],
                   typescript: list[tuple[str, str]]) -> None:  # fmt: skip
    assert [n for n, _ in python] == [n for n, _ in columns], "Python field names or order"
    assert [n for n, _ in typescript] == [n for n, _ in columns], "TypeScript field names or order"
    for (name, kind), (_, py), (_, ts) in zip(columns, python, typescript, strict=True):
        py_base, ts_base = CARRIED[kind]
        assert py_base in py.replace("<class '", "").replace("'>", ""), (name, kind, py)
        assert ts_base in ts, (name, kind, ts)


def test_grant_carries_acquire_result(db: Conn) -> None:
    assert_carried(
        acquire_result_columns(db), python_fields(client_db.Grant), typescript_fields("Grant")
    )


def test_verdict_carries_settle_columns(db: Conn) -> None:
    assert_carried(
        settle_columns(db), python_fields(client_db.Verdict), typescript_fields("Verdict")
    )


def test_a_column_the_carriers_lack_is_caught(db: Conn) -> None:
    """The check itself: a column added to acquire_result fails it."""
    db.execute("alter type public.acquire_result add attribute added_later integer")
    try:
        assert_carried(
            acquire_result_columns(db), python_fields(client_db.Grant), typescript_fields("Grant")
        )
    except AssertionError:
        return
    raise AssertionError("an added column went unnoticed")
