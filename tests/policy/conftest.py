"""The client fixtures for the policy runs through the pooler."""

from tests.client.conftest import clean_env

__all__ = ["clean_env"]
