"""The client fixtures (key pool, fake Gemini) for the runs through the pooler."""

from tests.client.conftest import clean_env, fake, keyed_db

__all__ = ["clean_env", "fake", "keyed_db"]
