"""A database restart while 12 callers wait in line (issue 23), at full size, tried as a user would.

One key, gemma at 30 RPM on the production window (60 s + 1 s guard), the fake Gemini counting
the same 30 per 60 s and taking 1 s per answer; 12 caller threads share 60 calls (two windows'
worth), each a WAIT with a 90 s budget. The first 30 go out at once; then all 12 callers wait
in line about a minute for the window to free. On a PostgreSQL cluster of its own
(``localstack.up``), three runs:

* **baseline:** through the Python client (one ``llm_limits.Client``), as it is;
* **restart, client:** the same, with ``pg_ctl restart -m fast`` (``localstack.restart``)
  started 150 ms before the first slot frees, when all 12 hold a place in line and the head is
  due: every backend is terminated, and the callers whose turn comes meet a database that is
  away;
* **restart, gateway:** the same through the llm-gateway (Deno, started locally), the callers
  using the google-genai SDK with a caller token and ``x-llm-limits-max-wait: 90``.

Reported for each: errors raised to the callers (any exception), 429s the fake answered, the
calls it served against the calls answered and those the ledger records as committed (and
failed settles: the client's warning, the gateway's log line), how long ``pg_ctl restart``
took, how many of the 12 in line were granted in their line's order, and how long after its
slot freed each of the 12 was granted (the slot of grant k frees at the ``granted_at`` of grant
k - 30, plus 61 s; the database's clock).

    python -m bench.restart
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from google import genai
from google.genai import types

from llm_limits import Client
from llm_limits.cli.gateway import FUNCTION_DIR, free_port, new_token, start_local, token_digest
from llm_limits.local import localstack
from llm_limits.local.fake_gemini import FakeGemini, Limits
from tests.faults.private_cluster import line_fills

REPO = Path(__file__).resolve().parents[1]
KEY_VAR, KEY, GROUP = "LLM_LIMITS_BENCH_RESTART_KEY", "bench-restart-key-value", "restart-group"
MODEL, WARM_UP, API_MODEL = "restart-gemma", "restart-warm-up", "gemma-3-27b-it"
RPM, WINDOW_MS, GUARD_MS = 30, 60_000, 1000
CALLERS, CALLS, LATENCY, MAX_WAIT = 12, 60, 1.0, 90
BEFORE_FREE_S = 0.15
PHASES = (("base", "client", False), ("client", "client", True), ("gateway", "gateway", True))

Call = Callable[[int], object]


@dataclass
class Run:
    errors: list[str] = field(default_factory=list)
    answered: int = 0
    settle_failures: int = 0
    restart_s: float = float("nan")
    terminated: int = 0  # backends the restart terminated (the server's log)
    refused: int = 0  # connections refused while it shut down or started up


class _SettleFailures(logging.Handler):
    """Counts the client's 'settle failed; the grant stays counted ...' warnings."""

    def __init__(self, run: Run) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("settle failed"):
            self.run.settle_failures += 1


def _setup(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "values ('restart-k1', %s, %s)",
            (KEY_VAR, GROUP),
        )
        for model, api_model, rpm in ((MODEL, API_MODEL, RPM), (WARM_UP, WARM_UP, 1000)):
            conn.execute(
                "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd, "
                "token_counter) values (%s, %s, %s, 1000000, 1000000, 'bytes')",
                (model, api_model, rpm),
            )
        conn.execute(
            "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s",
            (WINDOW_MS, GUARD_MS),
        )


@contextmanager
def _direct(url: str, fake: FakeGemini, run: Run) -> Iterator[Call]:
    """The callers' call through one ``llm_limits.Client``."""
    handler = _SettleFailures(run)
    logging.getLogger("llm_limits").addHandler(handler)
    try:
        with Client(url, base_url=fake.base_url, timeout=30.0) as client:
            client.generate(WARM_UP, "warm-up", mode="NO_WAIT")
            yield lambda k: client.generate(
                MODEL, f"call {k}", mode="WAIT", max_wait=MAX_WAIT, request_id=f"call-{k}"
            )
    finally:
        logging.getLogger("llm_limits").removeHandler(handler)


@contextmanager
def _gateway(url: str, fake: FakeGemini, run: Run) -> Iterator[Call]:
    """The callers' call through the llm-gateway, with the SDK and a caller token."""
    token = new_token()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select public.add_caller('restart-bench', %s::bytea)", (token_digest(token),))
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = start_local(REPO / FUNCTION_DIR, url, port=port, google_base_url=fake.base_url,
                           extra_env={KEY_VAR: KEY}, output=log.fileno())  # fmt: skip
        options = types.HttpOptions(
            base_url=f"http://127.0.0.1:{port}", api_version="v1beta", timeout=120_000,
            headers={"x-llm-limits-max-wait": str(MAX_WAIT)},
            retry_options=types.HttpRetryOptions(attempts=1),
        )  # fmt: skip
        sdk = genai.Client(api_key=token, http_options=options)

        def call(k: int) -> object:
            request = types.HttpOptions(headers={"x-llm-limits-request-id": f"call-{k}"})
            config = types.GenerateContentConfig(http_options=request)
            return sdk.models.generate_content(model=MODEL, contents=f"call {k}", config=config)

        try:
            sdk.models.generate_content(model=WARM_UP, contents="warm-up")
            yield call
        finally:
            sdk.close()
            proc.terminate()
            proc.wait(10)
            log.seek(0)
            run.settle_failures = log.read().count(b'"settle_failed"')


def _callers(call: Call, run: Run) -> list[threading.Thread]:
    """12 threads taking the 60 calls in turn; each error is kept, and the caller goes on."""
    taken = iter(range(1, CALLS + 1))
    lock = threading.Lock()

    def caller() -> None:
        while True:
            with lock:
                k = next(taken, None)
            if k is None:
                return
            try:
                call(k)
            except Exception as exc:
                run.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            else:
                with lock:
                    run.answered += 1

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    return threads


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` about the model (its one parameter)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, (MODEL,)).fetchall()


def _first_grant(url: str) -> datetime:
    sql = "select min(granted_at) from public.google_ai_reservations where model = %s"
    first: datetime = _rows(url, sql)[0][0]
    return first


def _line(url: str) -> list[str]:
    """The request ids of the callers in line, in line order."""
    sql = (
        "select request_id from google_ai_internal.wait_tickets where model = %s "
        "and alive_until > google_ai_internal.clock() order by seq"
    )
    return [r[0] for r in _rows(url, sql)]


def _one(
    cluster: localstack.LocalCluster, name: str, carrier: str, restart: bool
) -> dict[str, float]:
    url = localstack.create_database(cluster, f"bench_restart_{name}")
    localstack.push(url, REPO)
    _setup(url)
    run = Run()
    limits = {API_MODEL: Limits(RPM, 15000, 14400), WARM_UP: Limits(1000, 10**9, 10**9)}
    fake = FakeGemini({GROUP: [KEY]}, limits, latency=LATENCY, window=WINDOW_MS / 1000)
    with fake, (_direct if carrier == "client" else _gateway)(url, fake, run) as call:
        callers = _callers(call, run)
        in_line = line_fills(url, CALLERS, timeout=30.0)
        line = _line(url)
        free_at = _first_grant(url).timestamp() + (WINDOW_MS + GUARD_MS) / 1000
        time.sleep(max(0.0, free_at - BEFORE_FREE_S - time.time()))
        log_from = cluster.log.stat().st_size
        if restart:
            t0 = time.monotonic()
            localstack.restart(cluster)
            run.restart_s = time.monotonic() - t0
        for t in callers:
            t.join(timeout=4 * WINDOW_MS / 1000)
        stats = fake.stats()
    server_log = cluster.log.read_text(errors="replace")[log_from:]
    run.terminated = server_log.count("terminating connection due to administrator command")
    run.refused = sum(server_log.count(f"the database system is {what}")
                      for what in ("shutting down", "starting up"))  # fmt: skip
    return _figures(url, run, stats, in_line, line)


def _figures(url: str, run: Run, stats: Any, in_line: int, line: list[str]) -> dict[str, float]:
    rows = _rows(
        url,
        "select request_id, status, granted_at from public.google_ai_reservations "
        "where model = %s order by granted_at",
    )
    times = [r[2].timestamp() for r in rows]
    rank = {r[0]: i for i, r in enumerate(rows)}
    lags = [
        (times[rank[rid]] - times[rank[rid] - RPM] - (WINDOW_MS + GUARD_MS) / 1000) * 1000
        for rid in line
        if rank.get(rid, -1) >= RPM
    ]
    granted_order = sorted(line, key=lambda rid: rank.get(rid, len(rows)))
    return {
        "errors": len(run.errors),
        "429s": stats.rate_limited,
        "served": len(stats.grants.get((GROUP, API_MODEL), [])),
        "answered": run.answered,
        "committed": sum(r[1] == "committed" for r in rows),
        "settle_failures": run.settle_failures,
        "restart_s": run.restart_s,
        "terminated": run.terminated,
        "refused": run.refused,
        "in_line": in_line,
        "in_order": sum(a == b and a in rank for a, b in zip(granted_order, line, strict=True)),
        "lag_p50_ms": statistics.median(lags) if lags else float("nan"),
        "lag_max_ms": max(lags, default=float("nan")),
    }


def restart_run() -> dict[str, float]:
    os.environ[KEY_VAR] = KEY
    # Not pytest's or the bench's tmp dir: the server runs as `postgres`, which must reach it.
    root = Path(tempfile.mkdtemp(prefix="llt-bench-restart-"))
    root.chmod(0o755)
    m: dict[str, float] = {}
    try:
        cluster = localstack.up(root / "pg")
        for name, carrier, restart in PHASES:
            figures = _one(cluster, name, carrier, restart)
            m |= {f"rs_{name}_{k}": v for k, v in figures.items()}
    finally:
        localstack.down(root / "pg", remove=True)
        shutil.rmtree(root, ignore_errors=True)
    return m


def report_line(m: dict[str, float]) -> str:
    def phase(p: str) -> str:
        return (
            f"{m[f'rs_{p}_errors']:.0f} errors raised, {m[f'rs_{p}_429s']:.0f} 429s;"
            f" served {m[f'rs_{p}_served']:.0f}, answered {m[f'rs_{p}_answered']:.0f},"
            f" committed {m[f'rs_{p}_committed']:.0f}, failed settles"
            f" {m[f'rs_{p}_settle_failures']:.0f}; {m[f'rs_{p}_in_order']:.0f} of"
            f" {m[f'rs_{p}_in_line']:.0f} in line granted in line order,"
            f" {m[f'rs_{p}_lag_p50_ms']:.0f} ms p50 / {m[f'rs_{p}_lag_max_ms']:.0f} ms max"
            " after their slots freed"
        )

    def met(p: str) -> bool:
        served = m[f"rs_{p}_served"]
        return (
            m[f"rs_{p}_errors"] == 0 == m[f"rs_{p}_429s"] == m[f"rs_{p}_settle_failures"]
            and served == m[f"rs_{p}_answered"] == m[f"rs_{p}_committed"] == CALLS
        )

    def felt(p: str) -> str:
        return (
            f"{m[f'rs_{p}_restart_s']:.2f} s, {m[f'rs_{p}_terminated']:.0f} backends terminated,"
            f" {m[f'rs_{p}_refused']:.0f} connections refused"
        )

    return (
        f"| a database restart (`pg_ctl restart -m fast`) while {CALLERS} callers wait in line,"
        f" {RPM} RPM, 60 s window, {CALLS} calls | client ({felt('client')}): {phase('client')}."
        f" gateway ({felt('gateway')}): {phase('gateway')}"
        f" | the same without a restart (client): {phase('base')} |"
        " 0 errors, 0 429s, every call served recorded |"
        f" {'met' if met('client') and met('gateway') else '**not met**'} |"
    )


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    os.environ.pop("GOOGLE_GEMINI_BASE_URL", None)
    m = restart_run()
    print(m)
    print(report_line(m))


if __name__ == "__main__":
    main()
