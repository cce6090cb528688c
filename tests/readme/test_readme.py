"""The README names only what exists: every command, flag, env var, RPC, setting, Python
argument and file path it shows is looked up where it lives (see readme_names).
"""

from __future__ import annotations

import re

import pytest

from ..client.support import Conn
from . import readme_names as rn
from .readme_names import Problem

README = rn.parse(rn.README.read_text())
WORD_LIMIT = 2500  # whitespace-separated words, as `wc -w` counts them


def unexpected(problems: list[Problem]) -> list[str]:
    return [f"{name}: {why}" for name, why in problems]


def test_the_readme_is_short() -> None:
    words = len(rn.README.read_text().split())
    assert words <= WORD_LIMIT, f"README.md has {words} words; move detail to docs/"


def test_commands_and_flags_are_in_their_help() -> None:
    assert unexpected(rn.check_commands(README)) == []


def test_env_vars_are_read_by_the_code() -> None:
    assert unexpected(rn.check_env_vars(README)) == []


def test_python_calls_take_the_arguments_shown() -> None:
    assert unexpected(rn.check_python(README)) == []


def test_gateway_headers_exist() -> None:
    assert unexpected(rn.check_headers(README)) == []


def test_paths_and_links_exist() -> None:
    assert unexpected(rn.check_paths(README) + rn.check_anchors(README)) == []


@pytest.fixture
def catalog(db: Conn) -> set[str]:
    """Functions, tables, views, types and columns of our schemas, bare and qualified."""
    rows = db.execute(
        """
        select n.nspname, p.proname from pg_catalog.pg_proc as p
        join pg_catalog.pg_namespace as n on n.oid = p.pronamespace
        union all
        select n.nspname, c.relname from pg_catalog.pg_class as c
        join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
        union all
        select n.nspname, t.typname from pg_catalog.pg_type as t
        join pg_catalog.pg_namespace as n on n.oid = t.typnamespace
        union all
        select n.nspname, a.attname from pg_catalog.pg_attribute as a
        join pg_catalog.pg_class as c on c.oid = a.attrelid
        join pg_catalog.pg_namespace as n on n.oid = c.relnamespace
        where a.attnum > 0 and not a.attisdropped
        """
    ).fetchall()
    ours = [(s, name) for s, name in rows if s in ("public", "google_ai_internal")]
    return {name for _, name in ours} | {f"{s}.{name}" for s, name in ours}


def test_rpcs_tables_and_columns_are_in_the_catalog(catalog: set[str]) -> None:
    assert unexpected(rn.check_identifiers(README, catalog)) == []


def test_the_settings_table_is_the_settings_row(db: Conn) -> None:
    """Every setting of google_ai_settings is in the README's table, with its default."""
    rows = db.execute(
        """
        select column_name, column_default from information_schema.columns
        where table_schema = 'public' and table_name = 'google_ai_settings'
            and column_name not in ('id', 'updated_at')
        """
    ).fetchall()
    in_database = {
        name: re.sub(r"^'(.*)'::\w+$", r"\1", default).replace("interval ", "")
        for name, default in rows
    }
    assert rn.settings_table(README) == in_database
