"""Where a batch sends its calls: the direct client (``llm_limits.Client``) or the llm-gateway
(the official SDK with a caller token), blocking or on asyncio, and what each failure means
for the batch.

Every call is a WAIT at the pool's pace, in slices of ``wait_slice`` seconds: a slice that ends
without a grant is ``Busy`` (the item waits another slice, the queue moving as the pool frees),
never a failure. ``Stop`` ends the run: the day's quota is spent (``rpd``, until the next
Pacific midnight), or no key or token can serve the model, so every later item would be
refused the same way. Anything else fails the item alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .. import google_errors
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


def _from_google_429(err: genai_errors.APIError) -> Exception:
    """A 429 that reached the batch: a day quota stops the run, anything else is a wait."""
    quota = google_errors.quota_of(err)
    reasons = {r.lower() for r in google_errors.error_reasons(err)}  # the gateway's refusals
    if "rpd" in reasons or (quota.quota_id and "PerDay" in quota.quota_id):
        return Stop(f"the day's quota is spent: {err.message}")
    delay = (quota.retry_delay_ms or 1000) / 1000
    return Busy(next(iter(reasons), None) or "429", delay)


class DirectTarget:
    """Calls through ``llm_limits.Client`` (``generate`` / ``agenerate``, mode WAIT)."""

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
            "max_wait": self.wait_slice,
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
        if err.reason in ("rpd", "no_key"):
            return Stop(f"the pool refused: {err.reason}")
        return Busy(err.reason, err.retry_after if err.retry_after is not None else 1.0)
    if isinstance(err, genai_errors.APIError) and google_errors.is_rate_limit(err):
        return _from_google_429(err)
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
    if google_errors.is_rate_limit(err):
        return _from_google_429(err)
    if err.code in (401, 403):
        return Stop(f"the gateway refused the token: {err.code} {err.message}")
    return err
