"""Fixtures of the fault tests: the client tests' key pool on a fresh migrated database."""

from tests.client.conftest import clean_env, fake, keyed_db

__all__ = ["clean_env", "fake", "keyed_db"]
