"""A Kaggle notebook that calls Gemma through the llm-gateway and holds no Google key.

The notebook's only secret is a caller token (`llm-limits callers add NAME` prints it once);
the Google keys stay in the Supabase project. Nothing but the official SDK is needed:

    # Kaggle: Add-ons → Secrets → LLM_GATEWAY_TOKEN, then in the notebook
    from kaggle_secrets import UserSecretsClient
    TOKEN = UserSecretsClient().get_secret("LLM_GATEWAY_TOKEN")
    GATEWAY_URL = "https://<project-ref>.supabase.co/functions/v1/llm-gateway"

Locally (see docs/gateway.md):

    LLM_GATEWAY_URL=http://127.0.0.1:8787 LLM_GATEWAY_TOKEN=llmk_… \
        python examples/kaggle_gateway_notebook.py "Привет!" "What is a token bucket?"
"""

from __future__ import annotations

import os
import sys

from google import genai
from google.genai import errors, types

MODEL = "gemma-3-27b-it"


def main(prompts: list[str]) -> int:
    client = genai.Client(
        api_key=os.environ["LLM_GATEWAY_TOKEN"],
        http_options=types.HttpOptions(
            base_url=os.environ["LLM_GATEWAY_URL"],
            api_version="v1beta",
            timeout=120_000,  # milliseconds; the gateway may WAIT for quota first
            # Optional: refuse at once instead of waiting, or wait at most 10 s.
            headers={"x-llm-limits-max-wait": "10"},
        ),
    )
    config = types.GenerateContentConfig(system_instruction="Answer in one sentence.")
    for prompt in prompts:
        try:
            answer = client.models.generate_content(model=MODEL, contents=prompt, config=config)
        except errors.APIError as err:  # 429 RESOURCE_EXHAUSTED carries RetryInfo
            print(f"{prompt!r}: {err.code} {err.status}: {err.message}")
            continue
        usage = answer.usage_metadata
        tokens = usage.prompt_token_count if usage else None
        print(f"{prompt!r} -> {answer.text!r} ({tokens} prompt tokens)")
    print("streamed: ", end="")
    for chunk in client.models.generate_content_stream(model=MODEL, contents=prompts[0]):
        print(chunk.text or "", end="", flush=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["Привет! Как дела?"]))
