"""llm-limits: a Supabase-native quota controller for the Google AI API.

Quota decisions live in SQL RPCs; this package is the thin client around them::

    import llm_limits

    client = llm_limits.Client.from_env()  # or llm_limits.Client(dsn=..., ...)
    resp = client.generate("gemma-3-27b", "Hello", mode="WAIT", max_wait=30.0, caller="bot")
    resp = await client.agenerate("gemma-3-27b", "Hello")
    resp = llm_limits.generate("gemma-3-27b", "Hello")  # on a lazily built default client

``resp`` is the SDK's own ``GenerateContentResponse``. Refusals raise ``RateLimited``; after
the last attempt Google's errors reach the caller as ``google.genai.errors.APIError``.

``batch`` / ``abatch`` run many prompts at the pool's pace, with a progress bar and a resumable
checkpoint; see ``llm_limits.batching``::

    results = llm_limits.batch(prompts, model="gemma-3-27b", caller="festival-parser",
                               checkpoint="festival.jsonl")

``Database`` is the layer underneath: it runs the RPCs that ``llm_limits.db`` describes
(``db.run(acquire(...))`` -> ``Grant``, ``settle`` -> ``Verdict``, ...), for calling Google
another way.
"""

from .batching import BatchResult, Progress, abatch, batch
from .client import Client, Usage, Waiting, agenerate, default_client, generate
from .db import Database, Grant, ModelCounter, Verdict
from .errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    LimitsError,
    NoKeyAvailable,
    RateLimited,
    RpcError,
    UnsupportedByModel,
)
from .tokens import estimate_tokens

__all__ = [
    "BatchResult",
    "Client",
    "ConfigurationError",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "Grant",
    "LimitsError",
    "ModelCounter",
    "NoKeyAvailable",
    "Progress",
    "RateLimited",
    "RpcError",
    "UnsupportedByModel",
    "Usage",
    "Verdict",
    "Waiting",
    "abatch",
    "agenerate",
    "batch",
    "default_client",
    "estimate_tokens",
    "generate",
]
