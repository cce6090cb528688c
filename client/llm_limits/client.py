"""The thin client: every quota decision is an RPC; this module calls them around Google.

One ``generate`` makes at most ``max_attempts`` attempts, and each attempt asks the database
again: ``acquire`` a grant, call Google with the granted key, then settle the grant with
``commit_usage`` (success), ``report_rate_limit`` (429) or ``release`` (anything else). The
logic is one generator plan (see ``ops``), run blocking by ``generate`` and on asyncio by
``agenerate``.

Logging: logger ``llm_limits``, one line per attempt, with ``extra`` fields reservation_id,
key_alias, model, estimated_tokens, actual_tokens, waited_ms, attempt and outcome.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from . import google_errors, ops
from .db import Database, Grant, dsn_from_env
from .errors import DatabaseUnavailable, InvalidWait, LimitsError, NoKeyAvailable, RateLimited
from .gemma import prepare_request
from .keys import HeldKeys, resolve_keys
from .tokens import TokenCounter

log = logging.getLogger("llm_limits")


@dataclass(frozen=True)
class Usage:
    """What ``on_usage`` receives after each commit (the fields of the bot's llm_logger)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    request_id: str | None
    key_alias: str
    reservation_id: str


@dataclass(frozen=True)
class _Call:
    model: str
    mode: str
    wait: bool
    deadline: float
    estimate: int
    caller: str | None
    request_id: str


class Client:
    """Quota-controlled access to the Gemini API (see the package docstring).

    ``on_usage(Usage)`` runs inline after every commit (keep it quick); its exceptions are
    logged, never raised. ``pool`` / ``async_pool`` take psycopg_pool pools whose connections
    are made with ``autocommit=True, prepare_threshold=None``. ``timeout`` bounds each HTTP
    call to Google, in seconds; ``backoff`` is the first pause after a 5xx or timeout.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Any = None,
        async_pool: Any = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_attempts: int = 3,
        backoff: float = 0.5,
        caller: str | None = None,
        on_usage: Callable[[Usage], object] | None = None,
        connect_timeout: int = 10,
        keys_ttl: float = 300.0,
    ) -> None:
        self._db = Database(dsn, pool, async_pool, connect_timeout)
        self.max_attempts, self.backoff, self.caller = max(1, max_attempts), backoff, caller
        self.on_usage, self.keys_ttl = on_usage, keys_ttl
        # Retries stay with us, each re-checking the limits: attempts=1 also stops the SDK's
        # implicit aiohttp reconnect, which would send a second request on one grant.
        self._http_options = types.HttpOptions(
            api_version="v1beta",
            base_url=base_url,  # None: the SDK reads GOOGLE_GEMINI_BASE_URL itself
            timeout=round(timeout * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._lock = threading.Lock()
        self._keys: HeldKeys | None = None
        self._keys_until = 0.0
        self._max_wait_cap_ms = 0  # read with the keys, before the first acquire
        self._google: dict[str, tuple[str, genai.Client]] = {}
        self.tokens = TokenCounter(ttl=keys_ttl)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client on the first of LLM_LIMITS_DB_URL, SUPABASE_DB_URL, DATABASE_URL."""
        return cls(dsn_from_env(), **kwargs)

    def __repr__(self) -> str:
        keys = self._keys.aliases if self._keys is not None else "unresolved"
        return f"<llm_limits.Client db={self._db.describe()} keys={keys}>"

    def generate(
        self,
        model: str,
        contents: Any,
        *,
        mode: str = "WAIT",
        max_wait: float = 30.0,
        config: Any = None,
        caller: str | None = None,
        request_id: str | None = None,
    ) -> types.GenerateContentResponse:
        """Call ``models.generate_content`` under the quota; see the package docstring."""
        plan = self._plan(model, contents, mode, max_wait, config, caller, request_id)
        return ops.run(plan, self._db)

    async def agenerate(
        self,
        model: str,
        contents: Any,
        *,
        mode: str = "WAIT",
        max_wait: float = 30.0,
        config: Any = None,
        caller: str | None = None,
        request_id: str | None = None,
    ) -> types.GenerateContentResponse:
        """``generate`` on asyncio (psycopg.AsyncConnection and the SDK's ``aio`` client)."""
        plan = self._plan(model, contents, mode, max_wait, config, caller, request_id)
        return await ops.arun(plan, self._db)

    def held_keys(self) -> list[str]:
        """Aliases of the active keys this process holds (resolving them now if needed)."""
        return ops.run(self._held(), self._db).aliases

    def refresh_keys(self) -> None:
        """Resolve the held keys again on the next call (they are cached for ``keys_ttl``)."""
        self._keys = None

    def _plan(
        self,
        model: str,
        contents: Any,
        mode: str,
        max_wait: float,
        config: Any,
        caller: str | None,
        request_id: str | None,
    ) -> ops.Plan[types.GenerateContentResponse]:
        contents, cfg = prepare_request(model, contents, config)  # may refuse before acquire
        wait = str(mode).upper() == "WAIT"
        deadline = time.monotonic() + (max(0.0, max_wait) if wait else 0.0)
        keys = yield from self._held()
        # Counted once per call, before the first acquire; every attempt reserves this count.
        counter = self._google_client(keys.aliases[0], keys) if len(keys) else None
        count = yield from self.tokens.plan(model, contents, cfg, counter)
        call = _Call(
            model=model,
            mode=str(mode),
            wait=wait,
            deadline=deadline,
            estimate=count.tokens,
            caller=caller or self.caller,
            request_id=request_id or uuid.uuid4().hex,
        )
        failure: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            if not len(keys):
                raise NoKeyAvailable(f"this process holds no usable key for {model}") from failure
            grant = yield from self._acquire(call, keys, attempt, failure)
            outcome = yield from self._attempt(call, keys, grant, attempt, contents, cfg)
            if not isinstance(outcome, BaseException):
                return outcome
            failure = outcome
        assert failure is not None
        raise failure

    def _held(self) -> ops.Plan[HeldKeys]:
        keys = self._keys
        if keys is None or time.monotonic() >= self._keys_until:
            pool = yield ops.Query(Database.keys)
            self._max_wait_cap_ms = pool.max_wait_cap_ms
            keys = resolve_keys(pool.env_vars.items())
            for alias in keys.aliases:  # built now (~0.1 s each), not between grant and send
                self._google_client(alias, keys)
            self._keys, self._keys_until = keys, time.monotonic() + self.keys_ttl
        return keys

    def _acquire(
        self, call: _Call, keys: HeldKeys, attempt: int, failure: BaseException | None
    ) -> ops.Plan[Grant]:
        """A grant, waiting for it in short calls (each returns its connection at once).

        A WAIT holds a ticket, its place in line, for the whole attempt. While the database
        answers ``queued``, the caller sleeps ``retry_after_ms`` here (0: the head, which
        calls again at once) and calls again with the ticket and the wait it has left. One
        call waits at most the settings' ``max_wait_cap_ms``; a longer wait loops.
        """
        lost_once = cap_read_again = False
        ticket = uuid.uuid4() if call.wait else None
        while True:
            left_ms = int((call.deadline - time.monotonic()) * 1000) if call.wait else 0
            wait_ms = min(self._max_wait_cap_ms, max(0, left_ms))
            try:
                grant: Grant = yield ops.Query(
                    Database.acquire,
                    (call.model, call.estimate),
                    {"mode": call.mode, "max_wait_ms": wait_ms, "key_aliases": keys.aliases,
                     "caller": call.caller, "request_id": call.request_id, "ticket": ticket},
                )  # fmt: skip
            except DatabaseUnavailable:
                if lost_once:
                    raise
                lost_once = True  # once more on a fresh connection, with the wait left
                continue
            except InvalidWait:
                if cap_read_again:
                    raise
                cap_read_again = True  # an operator lowered max_wait_cap_ms since the keys read
                pool = yield ops.Query(Database.keys)
                self._max_wait_cap_ms = pool.max_wait_cap_ms
                continue
            if grant.granted:
                return grant
            if grant.reason == "queued":
                pause = min((grant.retry_after_ms or 0) / 1000, call.deadline - time.monotonic())
                if pause > 0:
                    yield ops.Sleep(pause)
                continue
            if grant.reason == "wait_timeout" and call.deadline - time.monotonic() > 0.001:
                if wait_ms == 0:  # a cap of 0: the database waits for no one, so sleep here
                    left = call.deadline - time.monotonic()
                    yield ops.Sleep(max(0.001, min((grant.retry_after_ms or 0) / 1000, left)))
                continue  # this acquire's wait was capped; the caller's is not over
            self._log(logging.INFO, call, attempt, f"refused:{grant.reason}", grant)
            if grant.reason == "no_key":
                raise NoKeyAvailable(f"no key this process holds is active for {call.model}")
            after = None if grant.retry_after_ms is None else grant.retry_after_ms / 1000
            raise RateLimited(grant.reason or "refused", after) from failure

    def _attempt(
        self,
        call: _Call,
        keys: HeldKeys,
        grant: Grant,
        attempt: int,
        contents: Any,
        cfg: types.GenerateContentConfig | None,
    ) -> ops.Plan[types.GenerateContentResponse | BaseException]:
        """One granted attempt: the response, an error worth another attempt, or a raise."""
        rid, alias = grant.reservation_id, str(grant.key_alias)
        sent = False
        try:
            google = self._google_client(alias, keys)
            sent = True
            response = yield ops.Send(google, grant.model, contents, cfg)
        except genai_errors.APIError as err:
            if google_errors.is_rate_limit(err):
                quota = google_errors.quota_of(err)
                yield from self._settle(Database.report_rate_limit, rid, *quota)
                self._log(logging.WARNING, call, attempt, "rate_limited", grant)
                return err
            yield from self._settle(Database.release, rid, f"http {err.code}", True)
            if google_errors.is_transient(err):
                return (yield from self._back_off(call, grant, attempt, err))
            rejected = google_errors.key_rejection(err)
            if rejected is not None:
                yield from self._settle(Database.disable_key, alias, rejected)
                keys.drop(alias)
            self._log(logging.ERROR, call, attempt, rejected or f"http_{err.code}", grant)
            raise
        except google_errors.TRANSPORT_ERRORS as err:
            yield from self._settle(Database.release, rid, type(err).__name__, True)
            return (yield from self._back_off(call, grant, attempt, err))
        except BaseException as err:  # incl. CancelledError and KeyboardInterrupt
            unsent = not sent or google_errors.is_request_invalid(err)
            yield from self._settle(Database.release, rid, type(err).__name__, not unsent)
            self._log(logging.WARNING, call, attempt, type(err).__name__, grant)
            raise
        return (yield from self._commit(call, grant, attempt, response))

    def _back_off(
        self, call: _Call, grant: Grant, attempt: int, err: BaseException
    ) -> ops.Plan[BaseException]:
        self._log(logging.WARNING, call, attempt, f"transient:{type(err).__name__}", grant)
        if attempt < self.max_attempts and self.backoff > 0:
            yield ops.Sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        return err

    def _commit(
        self, call: _Call, grant: Grant, attempt: int, response: types.GenerateContentResponse
    ) -> ops.Plan[types.GenerateContentResponse]:
        usage = response.usage_metadata
        prompt = call.estimate  # no usage_metadata: the upper bound stays counted
        completion = 0
        if usage is not None:
            prompt = call.estimate if usage.prompt_token_count is None else usage.prompt_token_count
            completion = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        finish = response.candidates[0].finish_reason if response.candidates else None
        meta = {
            "model_version": response.model_version,
            "finish_reason": getattr(finish, "value", finish),
            "thoughts_tokens": usage.thoughts_token_count if usage else None,
            "attempt": attempt,
        }
        meta = {k: v for k, v in meta.items() if v is not None}
        try:
            committed = yield ops.Query(
                Database.commit_usage, (grant.reservation_id, prompt, completion, meta)
            )
        except LimitsError as err:
            # The answer is here and the estimate (an upper bound) stays counted: return it.
            log.warning("commit_usage failed; the estimate stays counted: %s", err)
            committed = False
        except BaseException:
            yield from self._settle(Database.release, grant.reservation_id, "interrupted", True)
            raise
        self._log(logging.INFO, call, attempt, "ok", grant, actual=prompt)
        if committed and self.on_usage is not None:
            fields = (grant.model, prompt, completion, prompt + completion, call.request_id)
            try:
                self.on_usage(Usage(*fields, str(grant.key_alias), str(grant.reservation_id)))
            except Exception:
                log.exception("on_usage hook failed")
        return response

    def _settle(self, rpc: Callable[..., Any], *args: Any) -> ops.Plan[Any]:
        """Run a settling RPC; its failure is logged, never raised over the real outcome."""
        try:
            return (yield ops.Query(rpc, args))
        except LimitsError as err:
            log.warning("%s failed: %s", rpc.__name__, err)
            return None

    def _google_client(self, alias: str, keys: HeldKeys) -> genai.Client:
        """One SDK client per key, built on first use and reused."""
        value = keys.value(alias)
        if value is None:
            raise NoKeyAvailable(f"key {alias!r} was granted but this process does not hold it")
        with self._lock:
            cached = self._google.get(alias)
            if cached is None or cached[0] != value:
                google = genai.Client(
                    api_key=value, vertexai=False, http_options=self._http_options
                )
                cached = self._google[alias] = (value, google)
            return cached[1]

    def _log(
        self, level: int, call: _Call, attempt: int, outcome: str, grant: Grant | None,
        actual: int | None = None,
    ) -> None:  # fmt: skip
        rid = str(grant.reservation_id) if grant and grant.reservation_id else None
        alias = grant.key_alias if grant else None
        fields = {
            "reservation_id": rid,
            "key_alias": alias,
            "model": call.model,
            "estimated_tokens": call.estimate,
            "actual_tokens": actual,
            "waited_ms": grant.waited_ms if grant else None,
            "attempt": attempt,
            "outcome": outcome,
        }
        log.log(
            level, "%s attempt %d: %s (key %s, reservation %s, tokens %d estimated, %s actual)",
            call.model, attempt, outcome, alias, rid, call.estimate, actual, extra=fields,
        )  # fmt: skip

    def close(self) -> None:
        with self._lock:
            google, self._google = self._google, {}
        for _, client in google.values():
            client.close()
        self._db.close()

    async def aclose(self) -> None:
        with self._lock:
            google = list(self._google.values())
        for _, client in google:
            await client.aio.aclose()
        await self._db.aclose()
        self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_default: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide client behind ``llm_limits.generate``, built from_env() on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client.from_env()
        return _default


def generate(model: str, contents: Any, **kwargs: Any) -> types.GenerateContentResponse:
    return default_client().generate(model, contents, **kwargs)


async def agenerate(model: str, contents: Any, **kwargs: Any) -> types.GenerateContentResponse:
    return await default_client().agenerate(model, contents, **kwargs)
