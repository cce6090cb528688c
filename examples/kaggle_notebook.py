# %% [markdown]
# # Gemma from a Kaggle notebook, within the shared quota
#
# Cells of a Kaggle notebook (jupytext "percent" format). The notebook shares its Google
# AI keys with a bot and other notebooks; llm-limits keeps all of them under Google's limits.
#
# Setup, once (internet on):
# * **Add-ons → Add input**: the Kaggle dataset holding the wheel that `make wheel` built
#   (here `llm-limits-wheel`);
# * **Add-ons → Secrets**: `LLM_LIMITS_DB_URL`, the Supabase transaction pooler URL (port 6543)
#   of the quota database, and one secret per key, named like the key's `env_var_name` in
#   `google_ai_api_keys` (e.g. `GOOGLE_API_KEY_KAGGLE_1`). The client finds the keys through
#   Kaggle Secrets by itself.
#
# Never print a key: a public notebook that shows one gets it revoked by Google.

# %%
# !pip install -q /kaggle/input/llm-limits-wheel/*.whl

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
    max_wait=120.0,  # one ticket keeps its place in line that long
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
