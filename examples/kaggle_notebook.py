# %% [markdown]
# # Gemma from a Kaggle notebook, within the shared quota
#
# Cells of a Kaggle notebook (jupytext "percent" format). The notebook shares its Google
# AI keys with a bot and other notebooks; llm-limits keeps all of them under Google's limits.
#
# Setup, once, in the notebook's **Add-ons → Secrets** (internet on):
# * `LLM_LIMITS_DB_URL`: the Supabase pooler URL (port 6543) of the quota database;
# * one secret per key, named like the key's `env_var_name` in `google_ai_api_keys`
#   (e.g. `KAGGLE_KEY_1`). The client finds it through Kaggle Secrets by itself.
#
# Never print a key: a public notebook that shows one gets it revoked by Google.

# %%
# !pip install -q "llm-limits @ git+https://github.com/<you>/llm-limits"

# %%
import os
import time

try:
    from kaggle_secrets import UserSecretsClient

    os.environ.setdefault("LLM_LIMITS_DB_URL", UserSecretsClient().get_secret("LLM_LIMITS_DB_URL"))
except ImportError:  # not on Kaggle: use the environment as it is
    pass

import llm_limits

client = llm_limits.Client.from_env(caller="kaggle-notebook")
print("keys held:", client.held_keys())  # aliases only

# %% [markdown]
# One call. `mode="WAIT"` queues for a free slot; the reply is the SDK's own response.

# %%
response = client.generate(
    "gemma-3-27b",
    "Explain a sliding-window rate limit in two sentences.",
    mode="WAIT",
    max_wait=120.0,  # longer than 90 s is fine: the client keeps asking
)
print(response.text)
print(response.usage_metadata)

# %% [markdown]
# A batch. A refusal says why and when to retry; nothing reaches Google meanwhile.

# %%
prompts = [f"Give one fun fact about the number {n}." for n in range(1, 11)]
answers: dict[str, str] = {}
for prompt in prompts:
    while prompt not in answers:
        try:
            answers[prompt] = client.generate("gemma-3-27b", prompt, max_wait=60.0).text or ""
        except llm_limits.RateLimited as exc:
            if exc.reason == "rpd":  # the day's quota is spent: stop until Pacific midnight
                raise
            time.sleep(exc.retry_after or 5.0)
for prompt, answer in answers.items():
    print(prompt, "->", answer[:80])

# %%
client.close()
