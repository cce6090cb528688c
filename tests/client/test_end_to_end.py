"""Four processes, each its own Client, share two projects' keys against one fake Gemini.

No 429 may reach the fake server, and the grants must reach 95% of what the limits allow.
"What the limits allow" over a run of length T that starts with empty windows is, per
project, rpm x (floor(T / window) + 1): a full burst at 0, window, 2 x window, ...

The fast run shortens the window to 2 s in the database and in the fake server; it runs on
direct connections and again through PgBouncer in transaction mode (pool of 8).
The full-length run (60 s windows, two minutes) is marked slow.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from typing import Any

import pytest

from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.conftest import pooled

from . import e2e_worker
from .support import KEYS, Conn, projects, reservations, set_gemma_limits, set_window

RPM = 8
THREADS = 2


def worker_envs() -> dict[str, dict[str, str]]:
    var = {alias: spec[0] for alias, spec in KEYS.items()}
    value = {alias: spec[2] for alias, spec in KEYS.items()}
    return {
        "proc-a1": {var["a1"]: value["a1"]},
        "proc-a2-b1": {var["a2"]: value["a2"], var["b1"]: value["b1"]},
        "proc-all": {var[a]: value[a] for a in KEYS},
        "proc-local-b1": {"GOOGLE_API_KEY": value["b1"], "GOOGLE_API_LOCALNAME": "b1"},
    }


@pytest.mark.parametrize(
    ("window_ms", "guard_ms", "duration", "via"),
    [
        pytest.param(2000, 300, 5.5, "direct", id="2s-window"),
        pytest.param(2000, 300, 5.5, "pooler", id="2s-window-pooler"),
        pytest.param(60_000, 1000, 130.0, "direct", id="60s-window", marks=pytest.mark.slow),
    ],
)
def test_processes_share_keys_without_429_at_full_use(
    keyed_db: Conn,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    window_ms: int,
    guard_ms: int,
    duration: float,
    via: str,
) -> None:
    workers_url = pooled(db_url) if via == "pooler" else db_url
    set_window(keyed_db, window_ms, guard_ms)
    set_gemma_limits(keyed_db, rpm=RPM, tpm=15000)
    # RPM-bound sharing is the subject: the one-line prompts are counted locally (byte bound),
    # not with a countTokens round trip per call to the fake this process also serves.
    keyed_db.execute("update public.google_ai_model_limits set token_counter = 'bytes'")
    for var, _, _ in KEYS.values():  # each worker sets its own
        monkeypatch.delenv(var, raising=False)
    keyed_db.execute(
        "update public.google_ai_model_limits set rpm = 1000, rpd = 10000 where model = %s",
        (e2e_worker.WARM_UP_MODEL,),
    )
    limits = {
        "gemma-3-27b-it": Limits(rpm=RPM, tpm=15000, rpd=14400),
        e2e_worker.WARM_UP_MODEL: Limits(rpm=1000, tpm=250_000, rpd=10000),
    }
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)

    with FakeGemini(projects(), limits, window=window_ms / 1000) as srv:
        procs = [
            ctx.Process(
                target=e2e_worker.run,
                args=(
                    name,
                    workers_url,
                    srv.base_url,
                    env,
                    THREADS,
                    duration,
                    ready,
                    go,
                    start,
                    results,
                ),
            )
            for name, env in worker_envs().items()
        ]
        for p in procs:
            p.start()
        try:
            held = dict(ready.get(timeout=60) for _ in procs)
            start.value = time.time() + 0.2
            go.set()
            outcomes: list[e2e_worker.Outcome] = [
                results.get(timeout=duration + 120) for _ in procs
            ]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        stats = srv.stats()

    assert held == {
        "proc-a1": ["a1"],
        "proc-a2-b1": ["a2", "b1"],
        "proc-all": ["a1", "a2", "b1"],
        "proc-local-b1": ["b1"],
    }
    assert [o.errors for o in outcomes] == [[]] * len(procs)
    assert stats.rate_limited == 0, stats.summary()
    ok = sum(o.counts["ok"] for o in outcomes)
    gemma_grants = {
        p: len(g) for (p, model), g in stats.grants.items() if model.startswith("gemma")
    }
    assert ok == sum(gemma_grants.values())
    allowed = len(projects()) * RPM * (math.floor(duration * 1000 / window_ms) + 1)
    assert ok >= 0.95 * allowed, (ok, allowed, stats.summary())
    assert ok <= allowed
    assert set(gemma_grants) == set(projects())
    assert {r["status"] for r in reservations(keyed_db)} == {"committed"}
    # every process got a share
    assert all(o.counts["ok"] > 0 for o in outcomes), outcomes
