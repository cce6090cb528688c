"""Which keys a process holds: env vars, GOOGLE_API_KEY + GOOGLE_API_LOCALNAME, Kaggle Secrets."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_limits import Client
from llm_limits.keys import resolve_keys
from llm_limits.local.fake_gemini import FakeGemini

from .support import GEMMA, KEYS, Conn, hold, reservations

ROWS = [(alias, var) for alias, (var, _, _) in KEYS.items()]


def used_alias(db: Conn) -> str:
    [res] = reservations(db)
    assert res["status"] == "committed"
    return str(res["key_alias"])


def test_keys_come_from_the_env_vars_the_pool_names(
    client: Client, keyed_db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold(monkeypatch, "b1")

    client.generate(GEMMA, "hello")

    assert used_alias(keyed_db) == "b1"
    assert repr(client).endswith(" keys=['b1']>")  # not "a1" in repr: the db name is random hex


def test_google_api_key_with_localname_holds_exactly_that_key(
    client: Client, keyed_db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold(monkeypatch, "a1", "b1")  # ignored: the local pair wins
    monkeypatch.setenv("GOOGLE_API_KEY", KEYS["a2"][2])
    monkeypatch.setenv("GOOGLE_API_LOCALNAME", "a2")

    client.generate(GEMMA, "hello")

    assert used_alias(keyed_db) == "a2"


def test_localname_of_an_unknown_alias_holds_nothing() -> None:
    env = {"GOOGLE_API_KEY": "x" * 39, "GOOGLE_API_LOCALNAME": "nope"}
    assert len(resolve_keys(ROWS, env)) == 0


def test_google_api_key_alone_is_only_an_ordinary_env_var() -> None:
    env = {"GOOGLE_API_KEY": "value-g"}
    held = resolve_keys([("g", "GOOGLE_API_KEY"), ("a1", "LLT_KEY_A1")], env)
    assert held.aliases == ["g"]


@pytest.fixture
def kaggle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A stub `kaggle_secrets` module on sys.path, serving the returned dict."""
    (tmp_path / "kaggle_secrets.py").write_text(
        "SECRETS = {}\n"
        "class UserSecretsClient:\n"
        "    def get_secret(self, label):\n"
        "        if label not in SECRETS:\n"
        "            raise ValueError('secret not attached: ' + label)\n"
        "        return SECRETS[label]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("kaggle_secrets", None)
    import kaggle_secrets

    secrets: dict[str, str] = kaggle_secrets.SECRETS
    yield secrets
    sys.modules.pop("kaggle_secrets", None)  # later tests run without Kaggle


def test_keys_come_from_kaggle_secrets_when_not_in_the_env(
    client: Client, keyed_db: Conn, monkeypatch: pytest.MonkeyPatch, kaggle: dict[str, str]
) -> None:
    hold(monkeypatch)
    var, _, value = KEYS["a2"]
    kaggle[var] = value

    client.generate(GEMMA, "hello")

    assert used_alias(keyed_db) == "a2"


def test_the_env_wins_over_kaggle(kaggle: dict[str, str]) -> None:
    kaggle["LLT_KEY_A1"] = "from-kaggle"
    held = resolve_keys(ROWS, {"LLT_KEY_A1": "from-env"})
    assert held.value("a1") == "from-env"
    assert held.aliases == ["a1"]


def test_only_held_aliases_are_passed_to_acquire(
    keyed_db: Conn, db_url: str, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold(monkeypatch, "a2")
    with Client(db_url, base_url=fake.base_url) as client:
        for _ in range(3):
            client.generate(GEMMA, "hello")
    assert {r["key_alias"] for r in reservations(keyed_db)} == {"a2"}


def test_held_keys_repr_shows_aliases_only() -> None:
    held = resolve_keys(ROWS, {var: value for var, _, value in KEYS.values()})
    text = repr(held)
    assert "a1" in text
    assert not any(value in text for _, _, value in KEYS.values())
