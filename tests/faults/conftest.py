"""Fixtures of the fault tests: the client tests' key pool on a fresh migrated database, and a
PostgreSQL cluster of a module's own, to stop and restart (the shared test cluster is never
touched)."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_limits.local import localstack
from tests.client.conftest import clean_env, fake, keyed_db

__all__ = ["clean_env", "cluster", "fake", "keyed_db", "running"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[localstack.LocalCluster]:
    # Not pytest's tmp_path: the server runs as `postgres`, which must reach the directory.
    root = Path(tempfile.mkdtemp(prefix="llt-faults-"))
    root.chmod(0o755)
    try:
        yield localstack.up(root / "pg")
    finally:
        localstack.down(root / "pg", remove=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running(cluster: localstack.LocalCluster) -> Iterator[localstack.LocalCluster]:
    """The module's cluster, started again after the test if the test left it stopped."""
    yield cluster
    if not cluster.running():
        localstack.start_again(cluster)
