"""Where a batch sends its calls: the direct client (``llm_limits.Client``) or the llm-gateway
(the official SDK with a caller token), blocking or on asyncio, and what each failure means
for the batch.

Every call is a WAIT, and only the database's verdicts are read here: Google's answers are
settle's to read (the client's, or the gateway's). Through the client, an item's wait is one
ticket for as long as it takes (a day at most), so the item keeps its place in line and its
age; ``wait_slice`` is how long it is willing to sleep at once: a limit that frees later than
that (the day's quota spent, a long cooldown) is refused by the database. Through the gateway,
each request waits ``wait_slice`` at most. A refusal that ends the run is ``Stop``: the day's
quota (``rpd``) or the caller's daily budget (``caller_budget``) is spent until the next Pacific
midnight, or no key or token can serve the model, so every later item would be refused the
same way. Any other refusal is ``Busy`` (the item waits as told, then asks again); anything
else fails the item alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..client import Client
from ..errors import NoKeyAvailable, RateLimited


@dataclass(frozen=True)
class Answer:
    text: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


class Busy(Exception):
    """No grant within this slice; wait ``retry_after`` seconds and ask again."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(f"pool busy ({reason}); retry in {retry_after:.1f}s")
        self.reason, self.retry_after = reason, retry_after


class Stop(Exception):
    """The pool will refuse every item for now: stop starting new ones."""


class Target(Protocol):
    def call(self, prompt: str, request_id: str) -> Answer: ...

    async def acall(self, prompt: str, request_id: str) -> Answer: ...

    def key_aliases(self) -> list[str] | None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def answer_of(response: types.GenerateContentResponse) -> Answer:
    usage = response.usage_metadata
    finish = response.candidates[0].finish_reason if response.candidates else None
    completion = None
    if usage is not None and usage.candidates_token_count is not None:
        completion = usage.candidates_token_count + (usage.thoughts_token_count or 0)
    return Answer(
        text=response.text,
        prompt_tokens=usage.prompt_token_count if usage else None,
        completion_tokens=completion,
        finish_reason=getattr(finish, "value", finish),
    )


# The longest wait acquire takes (86,400,000 ms): an item's one ticket may wait all of it.
ITEM_MAX_WAIT_S = 86400.0
# How the gateway names the database's reason on a refusal it answers itself (errors.ts).
REASON_HEADER = "x-llm-limits-reason"
RUN_ENDING = ("rpd", "caller_budget", "no_key")


def _refused(reason: str, retry_after: float | None) -> Exception:
    """The pool's final refusal, for the batch: ``Stop`` when every later item would get it
    too, else ``Busy`` for ``retry_after`` seconds."""
    if reason in RUN_ENDING:
        after = "" if retry_after is None else f" for {retry_after:.0f}s"
        return Stop(f"the pool refused: {reason}{after}")
    return Busy(reason, retry_after if retry_after is not None else 1.0)


class DirectTarget:
    """Calls through ``llm_limits.Client`` (``generate`` / ``agenerate``, mode WAIT): the
    client's own acquire loop keeps the item's one ticket from slice to slice."""

    def __init__(
        self, client: Client, model: str, caller: str | None, config: Any, wait_slice: float
    ) -> None:
        self.client, self.model, self.caller = client, model, caller
        self.config, self.wait_slice = config, wait_slice

    def key_aliases(self) -> list[str] | None:
        return self.client.held_keys()

    def _kwargs(self, request_id: str) -> dict[str, Any]:
        return {
            "mode": "WAIT",
            "max_wait": ITEM_MAX_WAIT_S,
            "horizon": self.wait_slice,
            "config": self.config,
            "caller": self.caller,
            "request_id": request_id,
        }

    def call(self, prompt: str, request_id: str) -> Answer:
        try:
            return answer_of(self.client.generate(self.model, prompt, **self._kwargs(request_id)))
        except (RateLimited, NoKeyAvailable, genai_errors.APIError) as err:
            raise _translate(err) from err

    async def acall(self, prompt: str, request_id: str) -> Answer:
        try:
            response = await self.client.agenerate(self.model, prompt, **self._kwargs(request_id))
        except (RateLimited, NoKeyAvailable, genai_errors.APIError) as err:
            raise _translate(err) from err
        return answer_of(response)

    def close(self) -> None:
        pass  # the caller's client; a client the batch made is closed by the runner

    async def aclose(self) -> None:
        pass


def _translate(err: Exception) -> Exception:
    if isinstance(err, NoKeyAvailable):
        return Stop(f"no key for the model: {err}")
    if isinstance(err, RateLimited):
        return _refused(err.reason, err.retry_after)
    if isinstance(err, genai_errors.APIError) and err.code == 429:
        # Google's 429 after the client's last attempt: settle has read it (a cooldown, a spent
        # day); the next acquire waits it out or refuses with it.
        return Busy("429", 0.0)
    return err


class GatewayTarget:
    """Calls the llm-gateway with the official SDK: ``api_key`` is the caller token.

    The gateway waits for quota itself (``x-llm-limits-max-wait``) and records each call under
    the ``x-llm-limits-request-id`` it is given, so the ledger can answer for a killed run.
    """

    def __init__(
        self, url: str, token: str, model: str, config: Any, wait_slice: float, timeout: float
    ) -> None:
        self.model, self.wait_slice = model, wait_slice
        self.config = types.GenerateContentConfig.model_validate(config or {})
        self.sdk = genai.Client(
            api_key=token,
            http_options=types.HttpOptions(
                base_url=url,
                api_version="v1beta",
                timeout=round((wait_slice + timeout) * 1000),  # milliseconds
                retry_options=types.HttpRetryOptions(attempts=1),  # the batch retries
            ),
        )

    def key_aliases(self) -> list[str] | None:
        return None  # the gateway's keys: all of the pool's

    def _config(self, request_id: str) -> types.GenerateContentConfig:
        headers = {
            "x-llm-limits-mode": "WAIT",
            "x-llm-limits-max-wait": f"{self.wait_slice:g}",
            "x-llm-limits-request-id": request_id,
        }
        return self.config.model_copy(update={"http_options": types.HttpOptions(headers=headers)})

    def call(self, prompt: str, request_id: str) -> Answer:
        try:
            response = self.sdk.models.generate_content(
                model=self.model, contents=prompt, config=self._config(request_id)
            )
        except genai_errors.APIError as err:
            raise _gateway_error(err) from err
        return answer_of(response)

    async def acall(self, prompt: str, request_id: str) -> Answer:
        try:
            response = await self.sdk.aio.models.generate_content(
                model=self.model, contents=prompt, config=self._config(request_id)
            )
        except genai_errors.APIError as err:
            raise _gateway_error(err) from err
        return answer_of(response)

    def close(self) -> None:
        self.sdk.close()

    async def aclose(self) -> None:
        await self.sdk.aio.aclose()
        self.sdk.close()


def _gateway_error(err: genai_errors.APIError) -> Exception:
    if err.code in (401, 403):
        return Stop(f"the gateway refused the token: {err.code} {err.message}")
    headers = getattr(err.response, "headers", None) or {}
    reason = headers.get(REASON_HEADER)
    if reason:  # the gateway's own refusal: the database's verdict
        try:
            after: float | None = float(headers.get("retry-after") or "")
        except ValueError:
            after = None
        return _refused(reason, after)
    if err.code == 429:  # Google's, after the gateway's last attempt: see _translate
        return Busy("429", 0.0)
    return err
