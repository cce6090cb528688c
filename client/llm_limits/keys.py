"""Which Google AI keys this process holds, and their values.

The pool table names an environment variable per key (``env_var_name``); the key itself never
enters the database. A key value is read from the environment, then from Kaggle Secrets (only
where ``kaggle_secrets`` imports). ``GOOGLE_API_KEY`` together with ``GOOGLE_API_LOCALNAME``
means this process holds exactly one key: the one whose alias is ``GOOGLE_API_LOCALNAME``.

A key value is never logged, shown in a repr or an exception, or sent to the database: only
aliases leave this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

log = logging.getLogger("llm_limits")

LOCAL_KEY_VAR = "GOOGLE_API_KEY"
LOCAL_ALIAS_VAR = "GOOGLE_API_LOCALNAME"


class HeldKeys:
    """The keys this process holds: alias -> value. Its repr lists aliases only."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    @property
    def aliases(self) -> list[str]:
        return sorted(self._values)

    def value(self, alias: str) -> str | None:
        return self._values.get(alias)

    def drop(self, alias: str) -> None:
        self._values.pop(alias, None)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"HeldKeys({self.aliases!r})"


def _kaggle_secret(name: str) -> str | None:
    try:
        from kaggle_secrets import UserSecretsClient
    except ImportError:
        return None
    try:
        value = UserSecretsClient().get_secret(name)
    except Exception as exc:  # a secret that is not attached to the notebook
        log.debug("no Kaggle secret %s (%s)", name, type(exc).__name__)
        return None
    return value if isinstance(value, str) else None


def resolve_keys(
    rows: Iterable[tuple[str, str]], environ: Mapping[str, str] | None = None
) -> HeldKeys:
    """Resolve the values of the active keys ``(key_alias, env_var_name)`` this process holds."""
    env = os.environ if environ is None else environ
    active = dict(rows)
    local_key = env.get(LOCAL_KEY_VAR, "").strip()
    local_alias = env.get(LOCAL_ALIAS_VAR, "").strip()
    if local_key and local_alias:
        if local_alias not in active:
            log.warning("%s names %r, which is not an active key", LOCAL_ALIAS_VAR, local_alias)
            return HeldKeys({})
        return HeldKeys({local_alias: local_key})
    held: dict[str, str] = {}
    for alias, var in active.items():
        value = (env.get(var) or _kaggle_secret(var) or "").strip()
        if value:
            held[alias] = value
    return HeldKeys(held)
