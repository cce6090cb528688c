"""Keep the quota while calling Google another way: `llm_limits.Database` runs the RPCs, you
carry the messages, the database decides.

Here the call goes over plain HTTP (the standard library's urllib) instead of through
llm_limits.Client. The one waiting
rule of `acquire`: while the answer is `queued`, sleep `retry_after_ms` and ask again with the
ticket it returned. `settle` gets Google's status and body, or how the exchange failed, and
says whether to try again.

    export LLM_LIMITS_DB_URL=postgresql://...          # the quota database
    export GOOGLE_API_KEY_BOT=AIza...                  # each key held, as its env_var_name says
    python examples/database_direct.py "Hello!"        # GOOGLE_GEMINI_BASE_URL: another API root
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from llm_limits import Database, estimate_tokens
from llm_limits.db import acquire, pool_keys, settle

MODEL = "gemma-3-27b"
BASE_URL = os.environ.get("GOOGLE_GEMINI_BASE_URL", "https://generativelanguage.googleapis.com")


def post(model: str, key: str, prompt: str) -> tuple[int, Any]:
    """One generateContent call: Google's HTTP status and JSON body, whatever the status."""
    request = urllib.request.Request(
        f"{BASE_URL}/v1beta/models/{model}:generateContent",
        data=json.dumps({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}).encode(),
        headers={"content-type": "application/json", "x-goog-api-key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:  # 4xx and 5xx: settle reads the error body
        return err.code, json.load(err)


def main(prompt: str) -> str:
    db = Database(os.environ["LLM_LIMITS_DB_URL"])  # or Database(None, pool=a_psycopg_pool)
    held = [alias for alias, var in db.run(pool_keys()).items() if os.environ.get(var)]
    ask = dict(mode="WAIT", max_wait_ms=30_000, key_aliases=held, caller="etl")
    for _attempt in range(3):
        grant = db.run(acquire(MODEL, estimate_tokens(prompt), **ask))
        while grant.reason == "queued":
            time.sleep((grant.retry_after_ms or 0) / 1000)
            grant = db.run(acquire(MODEL, estimate_tokens(prompt), **ask, ticket=grant.ticket))
        if not grant.granted or grant.reservation_id is None or grant.env_var_name is None:
            raise SystemExit(f"refused: {grant.reason}; retry in {grant.retry_after_ms} ms")
        try:
            status, body = post(grant.model, os.environ[grant.env_var_name], prompt)
        except TimeoutError:  # may have reached Google: it stays counted
            verdict = db.run(settle(grant.reservation_id, None, transport_error="timeout"))
            outcome = "Google did not answer in time"
        except urllib.error.URLError:  # never sent: the grant is refunded
            verdict = db.run(settle(grant.reservation_id, None, transport_error="connect_failed"))
            outcome = "Google could not be reached"
        else:
            verdict = db.run(settle(grant.reservation_id, status, body))
            outcome = f"Google answered {status}"
        if verdict.action == "commit":
            return str(body["candidates"][0]["content"]["parts"][0]["text"])
        if not verdict.retry:
            raise SystemExit(f"{outcome}: {verdict.action}")
        time.sleep((verdict.retry_after_ms or 0) / 1000)
    raise SystemExit("no answer after 3 attempts")


if __name__ == "__main__":
    print(main(" ".join(sys.argv[1:]) or "Hello!"))
