"""Shared fixtures: real PostgreSQL databases cloned from the migrated template.

`make test` starts a throwaway cluster, deploys the migrations into the
database named by LLM_LIMITS_TEST_TEMPLATE with `supabase db push`, and points
LLM_LIMITS_TEST_ADMIN_URL at the cluster. Each test that needs a database gets
its own clone (CREATE DATABASE ... TEMPLATE), so tests never see each other's
rows.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

ADMIN_URL = os.environ.get("LLM_LIMITS_TEST_ADMIN_URL")
TEMPLATE = os.environ.get("LLM_LIMITS_TEST_TEMPLATE", "llm_limits_template")
# PgBouncer in transaction mode in front of the same cluster (scripts/test.sh starts it).
POOLER_URL = os.environ.get("LLM_LIMITS_TEST_POOLER_URL")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long stress and fault runs")


# Runs whose pass depends on the machine's timing (a grant reaching the fake within the guard,
# a bot's wait at full pool use): `make test` runs them one at a time on a cluster of their own,
# beside the others, which run at a lower priority (nice) so that they never hold a core these want.
SERIAL = (
    "tests/policy/",
    "tests/pooler/test_saturation.py",
    "tests/batch/test_thousand_items.py",
    # Each person's limit reached in every scaled window, one slot of delay at most, a first
    # place read within one recheck: counts within a window of a few seconds.
    "tests/client/test_end_users.py::test_two_bot_processes_hold_each_persons_limit",
    "tests/client/test_end_users.py::test_a_flood_of_20_delays_another_person_by_one_slot_at_most",
    "tests/gateway/test_gateway_queue.py::test_a_queued_call_reads_its_first_place_and_its_wait",
    # Full use with no 429: a grant must reach the fake within the 300 ms guard.
    "tests/client/test_end_to_end.py::test_processes_share_keys_without_429_at_full_use",
    # No 429 in `simulate`'s runs: a grant must reach the in-process fake within the 500 ms
    # guard (at nice 5 beside the other lanes, five once took longer).
    "tests/cli/test_simulate.py::test_short_run_reports_no_429s_and_writes_the_chart",
    "tests/cli/test_simulate.py::test_a_tpm_bound_run_of_long_russian_prompts",
    "tests/faults/test_postgres_restart.py::test_clients_ride_through_a_postgres_restart",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="long run; pass --run-slow")
    for item in items:
        if item.nodeid.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test that timed out is printed when it ends, with the stack of every thread: a run
    that then hangs on its way out (a thread of the test still stuck) still says where."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        return  # the controller prints it
    if report.failed and "from pytest-timeout" in report.longreprtext:
        stacks = "".join(text for name, text in report.sections if "stdout" in name)
        sys.stderr.write(f"\n{report.nodeid} timed out:\n{report.longreprtext}\n{stacks}\n")


def admin_url() -> str:
    if not ADMIN_URL:
        pytest.skip("no database: run through `make test` (LLM_LIMITS_TEST_ADMIN_URL unset)")
    return ADMIN_URL


def url_for(dbname: str) -> str:
    return re.sub(r"/[^/]*$", f"/{dbname}", admin_url())


def pooled(url: str) -> str:
    """The same database as ``url``, reached through the transaction pooler."""
    if not POOLER_URL:
        pytest.skip("no pooler: run through `make test` (LLM_LIMITS_TEST_POOLER_URL unset)")
    return re.sub(r"/[^/]*$", "/" + url.rsplit("/", 1)[1], POOLER_URL)


def create_database(template: str | None = TEMPLATE, prefix: str = "t") -> str:
    """A new database (a clone of the migrated template by default); returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        if template:
            conn.execute(f'create database "{name}" template "{template}"')
        else:
            conn.execute(f'create database "{name}"')
    return url_for(name)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def db_url() -> Iterator[str]:
    """URL of a fresh, migrated database for this test only."""
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to a fresh, migrated database."""
    with psycopg.connect(db_url, autocommit=True, prepare_threshold=None) as conn:
        yield conn
