# %% [markdown]
# # A festival-page parser on Kaggle: a batch with progress, a restart, and the resume
#
# Cells of a Kaggle notebook (jupytext "percent" format). Setup as in `kaggle_notebook.py`:
# the wheel's dataset as an input, the secret `LLM_LIMITS_DB_URL` (the Supabase pooler URL) and
# one secret per Google key, named like the key's `env_var_name`. With the llm-gateway instead,
# see the last cell.

# %%
# !pip install -q /kaggle/input/llm-limits-wheel/*.whl

# %%
import os

try:
    from kaggle_secrets import UserSecretsClient

    os.environ.setdefault("LLM_LIMITS_DB_URL", UserSecretsClient().get_secret("LLM_LIMITS_DB_URL"))
except ImportError:  # not on Kaggle: use the environment as it is
    pass

import pandas as pd

import llm_limits

# %% [markdown]
# The dataset: one page per row. Each item has an id (here the page's URL), so the
# checkpoint can tell which pages are done whatever the order of the rows.

# %%
try:
    pages = pd.read_csv("/kaggle/input/festival-pages/pages.csv")  # columns: url, text
except FileNotFoundError:  # a stand-in dataset off Kaggle
    pages = pd.DataFrame(
        {"url": [f"https://example.org/fest/{n}" for n in range(40)],
         "text": [f"Festival {n}: 12-14 July, Tartu. Tickets at the door." for n in range(40)]}
    )  # fmt: skip
items = [
    {
        "id": row.url,
        "prompt": f"Extract the festival's dates and city as 'dates; city':\n\n{row.text}",
    }
    for row in pages.itertuples()
]
CHECKPOINT = (
    "/kaggle/working/festival.jsonl" if os.path.isdir("/kaggle/working") else "festival.jsonl"
)

# %% [markdown]
# The batch. The bar shows how far it is and an ETA from the pool's remaining quota. Stop
# the kernel whenever you like (or let Kaggle restart it): run this cell again and it goes
# on from the checkpoint, calling only what is not done.

# %%
results = llm_limits.batch(
    items,
    model="gemma-3-27b",
    caller="festival-parser",
    checkpoint=CHECKPOINT,
    concurrency=8,
)

# %% [markdown]
# Results are in input order, one flat record each: pandas reads them as they are.

# %%
df = pd.DataFrame(results)
print(df.status.value_counts())
print(df[df.status != "ok"][["id", "status", "error"]])
parsed = pages.merge(df[["id", "text"]], left_on="url", right_on="id", suffixes=("", "_parsed"))
parsed.head()

# %% [markdown]
# Through the llm-gateway instead (no Google key and no database URL in the notebook):
#
# ```python
# TOKEN = UserSecretsClient().get_secret("LLM_GATEWAY_TOKEN")
# results = llm_limits.batch(items, model="gemma-3-27b-it", caller="festival-parser",
#                            gateway="https://<ref>.supabase.co/functions/v1/llm-gateway",
#                            token=TOKEN, checkpoint=CHECKPOINT)
# ```
