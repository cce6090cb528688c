"""The thin client: it carries messages between the database and Google, and decides nothing.

One ``generate`` makes at most ``max_attempts`` attempts. Each attempt: ``acquire`` (while the
answer is ``queued``, sleep ``retry_after_ms`` and call again with the ticket it returned; a
sleep past ``horizon`` is asked about again at once instead, see ``generate``), call Google
with the granted key, hand Google's status and body (or how the wire failed) to ``settle``,
and do what it says: return the response, or pause ``retry_after_ms`` and try again, or
raise. Google's error rules live in ``public.settle``. The plan is one generator
(see ``ops``), run blocking by ``generate`` and on asyncio by ``agenerate``.

Logging: logger ``llm_limits``, one line per attempt, with ``extra`` fields reservation_id,
key_alias, model, estimated_tokens, waited_ms, attempt and outcome.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from . import db, ops
from .db import Database, Grant, Verdict, dsn_from_env
from .errors import DatabaseUnavailable, LimitsError, NoKeyAvailable, RateLimited, RpcError
from .gemma import prepare_request
from .keys import HeldKeys, resolve_keys
from .tokens import TokenCounter
from .transport import transport_error

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
class Waiting:
    """What ``on_wait`` receives each time the database answers ``queued``: the place in line
    (1 = next; None while the call waits out of line for its person's next slot under the
    class's ``end_user_rpm``), when the turn is expected (ms from now), and the model waited
    for."""

    position: int | None
    expected_wait_ms: int
    model: str


OnWait = Callable[[Waiting], object]


@dataclass(frozen=True)
class _Call:
    model: str
    mode: str
    deadline: float
    estimate: int
    caller: str | None
    request_id: str
    on_wait: OnWait | None
    horizon_ms: int | None
    end_user: str | None


class Client:
    """Quota-controlled access to the Gemini API (see the package docstring).

    ``on_usage(Usage)`` runs inline after every commit (keep it quick); its exceptions are
    logged, never raised. ``on_wait(Waiting)`` (here, or per call) runs each time a WAIT is told
    it is in line: its place and expected wait, to show a person; under ``agenerate`` it may be
    a coroutine function. Its exceptions are logged too. ``pool`` / ``async_pool`` take
    psycopg_pool pools whose connections are made with ``autocommit=True,
    prepare_threshold=None``. ``timeout`` bounds each HTTP call to Google, in seconds.
    """

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, async_pool: Any = None,
        base_url: str | None = None, timeout: float = 60.0, max_attempts: int = 3,
        caller: str | None = None, on_usage: Callable[[Usage], object] | None = None,
        on_wait: OnWait | None = None, connect_timeout: int = 10, keys_ttl: float = 300.0,
    ) -> None:  # fmt: skip
        self._db = Database(dsn, pool, async_pool, connect_timeout)
        self.max_attempts, self.caller = max(1, max_attempts), caller
        self.on_usage, self.on_wait, self.keys_ttl = on_usage, on_wait, keys_ttl
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
        self._google: dict[str, genai.Client] = {}  # by key value: a rotated key gets a new one
        self.tokens = TokenCounter(ttl=keys_ttl)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Client:
        """A client on the first of LLM_LIMITS_DB_URL, SUPABASE_DB_URL, DATABASE_URL."""
        return cls(dsn_from_env(), **kwargs)

    def __repr__(self) -> str:
        keys = self._keys.aliases if self._keys is not None else "unresolved"
        return f"<llm_limits.Client db={self._db.describe()} keys={keys}>"

    def generate(
        self, model: str, contents: Any, *, mode: str = "WAIT", max_wait: float = 30.0,
        config: Any = None, caller: str | None = None, request_id: str | None = None,
        on_wait: OnWait | None = None, horizon: float | None = None, end_user: str | None = None,
    ) -> types.GenerateContentResponse:  # fmt: skip
        """Call ``models.generate_content`` under the quota; see the package docstring.

        ``max_wait``: seconds a WAIT may last in all (one ticket keeps its place in line that
        long). ``on_wait``: see the class docstring. ``horizon``: seconds a WAIT is willing to
        sleep at once; when the database says to sleep longer (the day's quota spent, a long
        cooldown), it is asked again at once looking no further than ``horizon``, and refuses
        with the limit that outlasts it (``RateLimited``) or names a shorter sleep. None: only
        ``max_wait`` bounds the wait. ``end_user``: the person the call is for, an opaque id
        of 1 to 200 characters such as ``"tg:123456"`` (the database keeps only a keyed hash
        of it): the caller class's per-person limits apply, past them ``RateLimited`` with
        reason ``end_user_limit`` (a WAIT waits for the person's next slot if it comes within
        ``max_wait``), and in line the people of a class take turns. Anything else raises
        ``RpcError`` LL007 before anything is counted.
        """
        plan = self._plan(
            model, contents, mode, max_wait, config, caller, request_id, on_wait, horizon,
            end_user,
        )  # fmt: skip
        return ops.run(plan, self._db)

    async def agenerate(
        self, model: str, contents: Any, *, mode: str = "WAIT", max_wait: float = 30.0,
        config: Any = None, caller: str | None = None, request_id: str | None = None,
        on_wait: OnWait | None = None, horizon: float | None = None, end_user: str | None = None,
    ) -> types.GenerateContentResponse:  # fmt: skip
        """``generate`` on asyncio (psycopg.AsyncConnection and the SDK's ``aio`` client)."""
        plan = self._plan(
            model, contents, mode, max_wait, config, caller, request_id, on_wait, horizon,
            end_user,
        )  # fmt: skip
        return await ops.arun(plan, self._db)

    def held_keys(self) -> list[str]:
        """Aliases of the active keys this process holds (resolving them now if needed)."""
        return ops.run(self._held(), self._db).aliases

    def refresh_keys(self) -> None:
        """Resolve the held keys again on the next call (they are cached for ``keys_ttl``)."""
        self._keys = None

    def _plan(
        self, model: str, contents: Any, mode: str, max_wait: float, config: Any,
        caller: str | None, request_id: str | None, on_wait: OnWait | None,
        horizon: float | None, end_user: str | None,
    ) -> ops.Plan[types.GenerateContentResponse]:  # fmt: skip
        # max_wait is the whole call's: what comes before the first acquire (the held keys'
        # SDK clients built, a tokenizer's first load) is waited out of it, not on top of it.
        deadline = time.monotonic() + max(0.0, max_wait)
        _check_end_user(end_user)
        contents, cfg = prepare_request(model, contents, config)  # may refuse before acquire
        keys = yield from self._held()
        # Counted once per call, before the first acquire; every attempt reserves this count.
        counter = self._google_client(keys.aliases[0], keys) if len(keys) else None
        count = yield from self.tokens.plan(model, contents, cfg, counter)
        call = _Call(model, str(mode), deadline, count.tokens,
                     caller or self.caller, request_id or uuid.uuid4().hex,
                     on_wait or self.on_wait,
                     None if horizon is None else round(max(0.0, horizon) * 1000),
                     end_user)  # fmt: skip
        failure: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            if not len(keys):  # none held, or the last one was just disabled
                raise failure or NoKeyAvailable(f"this process holds no usable key for {model}")
            grant = yield from self._acquire(call, keys, attempt, failure)
            response, failure, verdict = yield from self._send(grant, keys, contents, cfg)
            self._log(call, attempt, verdict.action, grant)
            if verdict.action == "commit":
                self._report_usage(call, grant, response)
                answer: types.GenerateContentResponse = response
                return answer
            if verdict.action == "disable_key":
                keys.drop(str(grant.key_alias))
            if failure is None or not verdict.retry or attempt == self.max_attempts:
                raise failure or RuntimeError(f"settle answered {verdict.action} to a 200")
            if verdict.retry_after_ms:
                yield ops.Sleep(verdict.retry_after_ms / 1000)
        raise AssertionError("unreachable")

    def _held(self) -> ops.Plan[HeldKeys]:
        keys = self._keys
        if keys is None or time.monotonic() >= self._keys_until:
            pool = yield db.pool_keys()
            keys = resolve_keys(pool.items())
            for alias in keys.aliases:  # built now (~0.1 s each), not between grant and send
                self._google_client(alias, keys)
            self._keys, self._keys_until = keys, time.monotonic() + self.keys_ttl
        return keys

    def _acquire(
        self, call: _Call, keys: HeldKeys, attempt: int, failure: BaseException | None
    ) -> ops.Plan[Grant]:
        """A grant: while the answer is ``queued``, sleep as told and ask again with the ticket
        (no connection is held while sleeping). A lost database is retried, the ticket keeping
        its place, until the deadline (for ``RIDE_OUT_S`` at least: a NO_WAIT has no wait budget).
        Anything else but a grant is raised."""
        ticket: uuid.UUID | None = None
        outage: db.Outage | None = None
        rejudge = False
        while True:
            wait_ms = max(0, int((call.deadline - time.monotonic()) * 1000))
            if rejudge and call.horizon_ms is not None:
                wait_ms = min(wait_ms, call.horizon_ms)  # this call only: the deadline stays
            try:
                grant: Grant = yield db.acquire(
                    call.model, call.estimate, mode=call.mode, max_wait_ms=wait_ms,
                    key_aliases=keys.aliases, caller=call.caller, request_id=call.request_id,
                    ticket=ticket, end_user=call.end_user,
                )  # fmt: skip
            except DatabaseUnavailable:
                outage = outage or db.Outage.lasting(db.RIDE_OUT_S, call.deadline)
                if (backoff := outage.next_pause()) is None:
                    raise
                yield ops.Sleep(backoff)
                continue
            if grant.granted:
                return grant
            if grant.reason != "queued":
                self._log(call, attempt, f"refused:{grant.reason}", grant)
                if grant.reason == "no_key":
                    raise NoKeyAvailable(f"no key this process holds is active for {call.model}")
                after = None if grant.retry_after_ms is None else grant.retry_after_ms / 1000
                raise RateLimited(grant.reason or "refused", after) from failure
            ticket, told = grant.ticket, time.monotonic()
            if call.on_wait is not None:
                place = Waiting(grant.queue_position, grant.expected_wait_ms or 0, grant.model)
                yield ops.Notify(call.on_wait, place)
            # A sleep past the horizon is not taken but asked about once more: looking no
            # further than the horizon, the database refuses with the limit that outlasts it.
            rejudge = not rejudge and call.horizon_ms is not None and (
                (grant.retry_after_ms or 0) > call.horizon_ms)  # fmt: skip
            pause = (grant.retry_after_ms or 0) / 1000 - (time.monotonic() - told)
            if pause > 0 and not rejudge:
                yield ops.Sleep(pause)

    def _send(
        self, grant: Grant, keys: HeldKeys, contents: Any, cfg: types.GenerateContentConfig | None
    ) -> ops.Plan[tuple[Any, BaseException | None, Verdict]]:
        """One granted call to Google, settled with whatever came back: (the response or None,
        the failure to raise if no attempt is left, settle's verdict). An interruption
        (KeyboardInterrupt, a cancelled task) is settled, then re-raised."""
        rid, sent = grant.reservation_id, False
        try:
            google = self._google_client(str(grant.key_alias), keys)
            sent = True
            request = {"model": grant.model, "contents": contents, "config": cfg}
            response = yield ops.Google(google, "generate_content", request)
        except genai_errors.APIError as err:
            return None, err, (yield from self._settle(rid, err.code, err.details, None))
        except Exception as err:
            wire = transport_error(err, sent)
            return None, err, (yield from self._settle(rid, None, None, wire))
        except BaseException:  # KeyboardInterrupt, CancelledError: settle, then stop
            yield from self._settle(rid, None, None, "cancelled" if sent else "not_sent")
            raise
        body = response.model_dump(mode="json", by_alias=True, exclude_none=True,
                                   exclude={"sdk_http_response"})  # fmt: skip
        return response, None, (yield from self._settle(rid, 200, body, None))

    def _settle(
        self, rid: Any, status: int | None, body: Any, wire: str | None
    ) -> ops.Plan[Verdict]:
        """settle's verdict. If the database cannot be told, the grant stays counted until its
        lease ends (an over-count, never an under-count): an answer is still returned, and a
        failure is raised without another attempt."""
        try:
            verdict: Verdict = yield db.settle(rid, status, body, wire)
            return verdict
        except LimitsError as err:
            log.warning("settle failed; the grant stays counted until its lease ends: %s", err)
            return Verdict("commit" if status == 200 else "release_sent", False, None)

    def _report_usage(self, call: _Call, grant: Grant, response: Any) -> None:
        usage = response.usage_metadata
        if self.on_usage is None or usage is None:
            return
        prompt = usage.prompt_token_count or 0
        completion = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        fields = (grant.model, prompt, completion, prompt + completion, call.request_id)
        try:
            self.on_usage(Usage(*fields, str(grant.key_alias), str(grant.reservation_id)))
        except Exception:
            log.exception("on_usage hook failed")

    def _google_client(self, alias: str, keys: HeldKeys) -> genai.Client:
        """One SDK client per key, built on first use and reused."""
        value = keys.value(alias)
        if value is None:
            raise NoKeyAvailable(f"key {alias!r} was granted but this process does not hold it")
        with self._lock:
            if value not in self._google:
                self._google[value] = genai.Client(
                    api_key=value, vertexai=False, http_options=self._http_options
                )
            return self._google[value]

    def _log(self, call: _Call, attempt: int, outcome: str, grant: Grant) -> None:
        rid = str(grant.reservation_id) if grant.reservation_id else None
        level = logging.INFO if outcome == "commit" or outcome.startswith("refused") else (
            logging.WARNING)  # fmt: skip
        fields = {"reservation_id": rid, "key_alias": grant.key_alias, "model": call.model,
                  "estimated_tokens": call.estimate, "waited_ms": grant.waited_ms,
                  "attempt": attempt, "outcome": outcome}  # fmt: skip
        log.log(level, "%s attempt %d: %s (key %s, reservation %s, %d tokens estimated)",
                call.model, attempt, outcome, grant.key_alias, rid, call.estimate,
                extra=fields)  # fmt: skip

    def close(self) -> None:
        with self._lock:
            google, self._google = self._google, {}
        for client in google.values():
            client.close()
        self._db.close()

    async def aclose(self) -> None:
        with self._lock:
            google = list(self._google.values())
        for client in google:
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


def _check_end_user(end_user: object) -> None:
    """An end user is text (its length is the database's rule): anything else, such as a bare
    Telegram id, fails as the database fails bad input, before anything is counted."""
    if end_user is not None and not isinstance(end_user, str):
        raise RpcError(
            "LL007", "end_user must be text",
            f"got {type(end_user).__name__}", "Pass an opaque id such as 'tg:123456', or None.",
        )  # fmt: skip


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
