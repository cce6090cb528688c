"""An async chat bot calling Gemma through llm-limits.

Every call asks the quota database first (acquire), so any number of bot processes and
notebooks can share the same keys without a 429. Run it against the fake server:

    python -m llm_limits.local.fake_gemini --project demo=my-fake-key &      # prints its URL
    export GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8089
    export LLM_LIMITS_DB_URL=postgresql://...  GOOGLE_API_KEY_BOT=my-fake-key  # as env_var_name
    python examples/bot_async.py "Hello!" "What is a token bucket?"
"""

from __future__ import annotations

import asyncio
import logging
import sys

from google.genai import errors, types

import llm_limits

log = logging.getLogger("bot")

MODEL = "gemma-3-27b"
SYSTEM = "You are a helpful assistant. Answer in at most three sentences."


def llm_logger(usage: llm_limits.Usage) -> None:
    """The bot's existing usage logger, now fed by the client after each commit.

    settle already wrote the token_usage row (with key_alias and reservation_id in its
    meta), so this hook only logs; it must not insert a second row.
    """
    log.info(
        "llm usage: %s prompt + %s completion tokens on %s (request %s)",
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.key_alias,
        usage.request_id,
    )


async def answer(client: llm_limits.Client, message_id: str, text: str) -> str:
    # Gemma rejects system_instruction; the client folds it into the first user turn.
    config = types.GenerateContentConfig(system_instruction=SYSTEM, max_output_tokens=512)
    try:
        response = await client.agenerate(
            MODEL,
            text,
            mode="WAIT",  # queue for a free slot, up to max_wait seconds
            max_wait=30.0,
            config=config,
            caller="bot",
            request_id=message_id,  # lands in token_usage and the audit log
        )
    except llm_limits.RateLimited as exc:  # no slot within max_wait
        after = f" in {exc.retry_after:.0f}s" if exc.retry_after is not None else " later"
        return f"I'm busy right now ({exc.reason}); please ask again{after}."
    except llm_limits.NoKeyAvailable:
        return "No API key is configured for me."
    except llm_limits.LimitsError as exc:  # database down, prompt too large, bad model...
        log.error("llm-limits refused the call: %s", exc)
        return "Sorry, I can't answer that right now."
    except errors.APIError as exc:  # Google's own error, after the client's retries
        log.error("Gemini failed: %s %s", exc.code, exc.status)
        return "Sorry, the model failed."
    return response.text or ""


async def main(messages: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    async with llm_limits.Client.from_env(caller="bot", on_usage=llm_logger) as client:
        # Stand-in for the chat platform's event loop: messages arrive concurrently.
        replies = await asyncio.gather(
            *(answer(client, f"msg-{i}", text) for i, text in enumerate(messages))
        )
    for text, reply in zip(messages, replies, strict=True):
        print(f"> {text}\n{reply}\n")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["Hello!", "Name three prime numbers."]))
