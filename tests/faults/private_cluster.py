"""A database on a cluster of a test module's own (the ``cluster`` fixture), and the moment a
restart test waits for: every caller holding a place in a WAIT line."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg

from llm_limits.local import localstack
from tests.client.support import insert_keys

REPO = Path(__file__).resolve().parents[2]


def keyed_database(cluster: localstack.LocalCluster, prefix: str) -> str:
    """A fresh database on ``cluster``, migrated with ``supabase db push``, holding the client
    tests' key pool (a1, a2 in proj-a; b1 in proj-b); its URL."""
    url = localstack.create_database(cluster, f"{prefix}_{uuid.uuid4().hex[:8]}")
    localstack.push(url, REPO)
    with psycopg.connect(url, autocommit=True) as conn:
        insert_keys(conn)
    return url


def line_fills(url: str, callers: int, timeout: float = 10.0) -> int:
    """Once ``callers`` hold a live place in a WAIT line (or at the timeout): how many do."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "select count(*) from google_ai_internal.wait_tickets "
                "where alive_until > google_ai_internal.clock()"
            ).fetchone()
            in_line = int(row[0]) if row else 0
            if in_line >= callers or time.monotonic() > deadline:
                return in_line
            time.sleep(0.01)
