"""The bot among the notebooks, timed as the people on both sides of it feel it.

One Google project (one key) with gemma-3-27b and its seeded fallback gemma-3-12b at ``rpm``
each, and the seeded classes: ``telegram-bot`` in class interactive, ``kaggle-batch`` in class
batch (``Load.policies=False``: no policy row, everyone in class default). ``run`` starts each
``Workers`` group as separate processes (so the bot's timing is not bound by their GIL) that
call ``Client.generate(MODEL, ..., mode="WAIT")`` back to back, and from ``bot_from`` seconds on
sends one short bot call every ``bot_every`` seconds, on that schedule whatever the last answer
took (people do not wait for each other), through ``Client.generate`` or whatever ``bot`` calls
(the llm-gateway's HTTP, say). Everything goes through ``url`` (PgBouncer in the tests and the
bench) against the local fake Gemini.

Every call is timed around the call itself (``generate()``, or the HTTP request), and the model
that answered is what the call returned; the fake's own stats give what was served per model
and its 429s. ``tests/policy`` asserts on it at scaled time; ``make bench`` (bench/policy.py)
reports it at full size.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from llm_limits import Client, RateLimited, Waiting
from llm_limits.cli.gateway import free_port, new_token, start_local, token_digest
from llm_limits.local.fake_gemini import FakeGemini, Limits

MODEL, API_MODEL = "gemma-3-27b", "gemma-3-27b-it"
FALLBACK, API_FALLBACK = "gemma-3-12b", "gemma-3-12b-it"
WARM_UP_MODEL = "gemini-2.5-flash"
PROJECT = "pl-proj"
KEY_ALIAS, KEY_VAR, KEY_VALUE = "pl-key", "LLT_POLICY_KEY", "AIzaFAKEpl-3c1e5a7b9d2f4a6c8e0b1d3f"
BOT, BATCH = "telegram-bot", "kaggle-batch"
Conn = psycopg.Connection[tuple[object, ...]]
PROMPTS = {BOT: "Привет! Что сегодня в программе?", BATCH: "Разбери страницу фестиваля."}


@dataclass(frozen=True)
class Workers:
    """``count`` processes of ``caller``, each calling back to back with WAIT ``max_wait``,
    from ``after`` seconds into the run."""

    caller: str
    count: int
    max_wait: float
    after: float = 0.0


@dataclass(frozen=True)
class Load:
    """One run: its size, who calls, and the policy in force. The defaults are the issue's
    scenario at full size (60 s windows, 30 RPM, 16 batch processes, the bot every 4 s from
    t = 10 s with max_wait 30 s, no reserve, four minutes)."""

    window_ms: int = 60_000
    guard_ms: int = 1000
    rpm: int = 30
    workers: tuple[Workers, ...] = (Workers(BATCH, 16, 120.0),)
    bot_every: float | None = 4.0  # None: the bot stays idle
    bot_from: float = 10.0
    bot_until: float | None = None  # None: to the end of the run
    bot_max_wait: float = 30.0
    seconds: float = 240.0
    rpm_reserve: float = 0.0
    policies: bool = True
    policies_at: float = 0.0  # seconds into the run at which the policy rows are written
    fallback_after_ms: int | None = None  # None: the seeded 2000
    aging_ms: int | None = None  # None: the seeded 60000
    slice_ms: int | None = None  # wait_slice_ms; None: the seeded 2000
    grace_ms: int | None = None  # wait_ticket_grace_ms; None: the seeded 1000


@dataclass(frozen=True)
class Waited:
    """One ``on_wait`` report: seconds into the call, the place in line, the expected wait."""

    after: float
    position: int
    expected_ms: int


@dataclass(frozen=True)
class Call:
    """One call as its caller saw it: when it started (epoch seconds, comparable with the
    ledger), how long it took in all, the API model that answered (None when it did not) and
    "ok", "refused: ..." (the quota said no) or "error: ...". ``waits`` are its on_wait
    reports; ``request_id`` names its ledger row."""

    caller: str
    started: float
    seconds: float
    model: str | None
    outcome: str
    waits: tuple[Waited, ...] = ()
    request_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    calls: list[Call]
    served: dict[str, list[float]]  # API model -> when the fake accepted each call (epoch s)
    google_429s: int
    started: float  # epoch seconds at t = 0
    seconds: float
    # (epoch s, server connections inside acquire), sampled every 100 ms: a pooler whose every
    # server connection is in acquire makes every other statement wait for one.
    busy: list[tuple[float, int]] = field(default_factory=list)

    def of(self, caller: str) -> list[Call]:
        return [c for c in self.calls if c.caller == caller]

    def use(self, api_model: str, load: Load) -> float:
        """Calls the fake served on ``api_model`` during the run, per window, over the RPM."""
        end = self.started + self.seconds
        n = sum(1 for t in self.served.get(api_model, []) if self.started <= t < end)
        return n / (self.seconds * 1000 / load.window_ms) / load.rpm


BotCall = Callable[[], Call]


def timed_call(client: Client, caller: str, max_wait: float) -> Call:
    """One ``generate()`` of ``caller``'s prompt, timed around the call."""
    waits: list[Waited] = []
    started, t0 = time.time(), time.monotonic()

    def on_wait(w: Waiting) -> None:
        waits.append(Waited(time.monotonic() - t0, w.position or 0, w.expected_wait_ms))

    model: str | None = None
    request_id = f"{caller}-{uuid.uuid4().hex}"
    try:
        answer = client.generate(
            MODEL, PROMPTS[caller], max_wait=max_wait, on_wait=on_wait, request_id=request_id
        )
        model, outcome = answer.model_version, "ok"
    except RateLimited as exc:
        outcome = f"refused: {exc.reason}"
    except genai_errors.APIError as exc:
        outcome = f"error: {exc.code} {exc.status}"
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}: {exc}"
    return Call(caller, started, time.monotonic() - t0, model, outcome, tuple(waits), request_id)


@contextmanager
def client_bot(url: str, srv: FakeGemini, max_wait: float) -> Iterator[BotCall]:
    """The bot as a ``Client`` of its own, warmed up (keys and SDK client ready)."""
    with Client(url, base_url=srv.base_url, caller=BOT) as client:
        client.generate(WARM_UP_MODEL, "warm-up", max_wait=30.0)
        yield lambda: timed_call(client, BOT, max_wait)


def sdk_bot(sdk: Any) -> BotCall:
    """The bot through the llm-gateway: ``sdk`` is a google-genai client whose base URL is the
    gateway and whose API key is the bot's caller token (its headers carry the WAIT budget).
    The model that answered is the gateway's ``x-llm-limits-model``; a 429 is the gateway's
    refusal (the fake counts Google's own 429s apart)."""

    def call() -> Call:
        started, t0 = time.time(), time.monotonic()
        model: str | None = None
        try:
            answer = sdk.models.generate_content(model=MODEL, contents=PROMPTS[BOT])
            model, outcome = answer.sdk_http_response.headers.get("x-llm-limits-model"), "ok"
        except genai_errors.APIError as exc:
            refused = exc.code == 429
            outcome = f"{'refused' if refused else 'error'}: {exc.code} {exc.message}"
        except Exception as exc:
            outcome = f"error: {type(exc).__name__}: {exc}"
        return Call(BOT, started, time.monotonic() - t0, model, outcome)

    return call


@contextmanager
def gateway_bot(db: Conn, function_dir: Path, url: str, srv: FakeGemini, max_wait: float
                ) -> Iterator[BotCall]:  # fmt: skip
    """The bot as a caller of the llm-gateway: its token, the Edge Function (Deno, from
    ``function_dir``) on ``url`` in front of ``srv``, and an SDK client that asks for WAIT with
    ``max_wait`` seconds."""
    token = new_token()
    db.execute("select public.add_caller(%s::text, %s::bytea)", (BOT, token_digest(token)))
    port = free_port()
    proc = start_local(
        function_dir, url, port=port, google_base_url=srv.base_url,
        extra_env={KEY_VAR: KEY_VALUE}, output=subprocess.DEVNULL,
    )  # fmt: skip
    options = types.HttpOptions(
        base_url=f"http://127.0.0.1:{port}", api_version="v1beta", timeout=60_000,
        headers={"x-llm-limits-mode": "WAIT", "x-llm-limits-max-wait": f"{max_wait:g}"},
        retry_options=types.HttpRetryOptions(attempts=1),
    )  # fmt: skip
    sdk = genai.Client(api_key=token, http_options=options)
    try:
        sdk.models.generate_content(model=WARM_UP_MODEL, contents="warm-up")
        yield sdk_bot(sdk)
    finally:
        sdk.close()
        proc.terminate()
        proc.wait(10)


def prepare(db: Conn, load: Load) -> None:
    """One key, one project; 27b and 12b at ``load.rpm`` (bytes count the tokens: no tokenizer
    download on each process's first call); the settings and classes the load asks for."""
    db.execute(
        "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group)"
        " values (%s, %s, %s)",
        (KEY_ALIAS, KEY_VAR, PROJECT),
    )
    db.execute(
        "update public.google_ai_settings set window_ms = %s, window_guard_ms = %s,"
        " aging_ms = coalesce(%s, aging_ms), wait_slice_ms = coalesce(%s, wait_slice_ms),"
        " wait_ticket_grace_ms = coalesce(%s, wait_ticket_grace_ms)",
        (load.window_ms, load.guard_ms, load.aging_ms, load.slice_ms, load.grace_ms),
    )
    db.execute(
        "update public.google_ai_model_limits set rpm = %s, token_counter = 'bytes'"
        " where model in (%s, %s)",
        (load.rpm, MODEL, FALLBACK),
    )
    db.execute(
        "update public.google_ai_model_limits set rpm = 1000, rpd = 10000,"
        " token_counter = 'bytes' where model = %s",
        (WARM_UP_MODEL,),
    )
    db.execute(
        "update public.google_ai_caller_classes set rpm_reserve = %s,"
        " fallback_after_ms = coalesce(%s, fallback_after_ms) where name = 'interactive'",
        (load.rpm_reserve, load.fallback_after_ms),
    )
    if load.policies and load.policies_at <= 0:
        add_policies(db)


def add_policies(db: Conn) -> None:
    db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class) values"
        " (%s, 'interactive'), (%s, 'batch')",
        (BOT, BATCH),
    )


def fake_gemini(load: Load) -> FakeGemini:
    """The fake Google for ``load``: Google's free-tier limits for 27b and 12b at its RPM, on
    its window; not started."""
    limits = {
        API_MODEL: Limits(rpm=load.rpm, tpm=15_000, rpd=14_400),
        API_FALLBACK: Limits(rpm=load.rpm, tpm=15_000, rpd=14_400),
        WARM_UP_MODEL: Limits(rpm=1000, tpm=10_000_000, rpd=10_000),
    }
    return FakeGemini({PROJECT: [KEY_VALUE]}, limits, window=load.window_ms / 1000)


def run(
    db: Conn, url: str, load: Load, srv: FakeGemini,
    bot: Callable[[], AbstractContextManager[BotCall]] | None = None,
) -> Outcome:  # fmt: skip
    """``load`` on the database behind ``url`` (``db`` reaches the same database directly)
    against the started fake ``srv``. The bot calls through ``Client.generate``, or through
    what ``bot()`` yields (entered once the keys and classes are in place: ``gateway_bot``).
    Returns every call as its caller saw it and what the fake served."""
    prepare(db, load)
    os.environ[KEY_VAR] = KEY_VALUE
    with (bot or (lambda: client_bot(url, srv, load.bot_max_wait)))() as call_bot:
        return _drive(db, url, load, srv, call_bot)


def _drive(db: Conn, url: str, load: Load, srv: FakeGemini, call_bot: BotCall) -> Outcome:
    ctx = _processes()
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_work,
            args=(url, srv.base_url, w.caller, w.max_wait, w.after, start, results),
            daemon=True,
        )  # fmt: skip
        for w in load.workers
        for _ in range(w.count)
    ]
    for p in procs:
        p.start()
    calls: list[Call] = []
    busy: list[tuple[float, int]] = []
    try:
        for ready in _gather(results, procs, 120):
            if ready is not None:
                raise RuntimeError(f"a worker failed to start: {ready}")
        t0, began = time.monotonic(), time.time()
        start.set()
        sampler = threading.Thread(target=_sample, args=(db.info.dsn, t0 + load.seconds, busy))
        sampler.start()
        bot_threads = _schedule(load, t0, call_bot, calls, db)
        sampler.join()
        for p in procs:
            if p.pid is not None:
                os.kill(p.pid, signal.SIGINT)  # the call under way stops; its time is not kept
        for done in _gather(results, procs, 60):
            calls.extend(done)
        for t in bot_threads:
            t.join(timeout=load.bot_max_wait + 30)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    stats = srv.stats()
    served = {m: [g.ts for g in gs] for (_, m), gs in stats.grants.items()}
    return Outcome(calls, served, stats.rate_limited, began, load.seconds, busy)


def _sample(dsn: str, until: float, busy: list[tuple[float, int]]) -> None:
    """Every 100 ms until ``until`` (monotonic): how many backends of this database run an
    acquire (through a direct connection, so the pooler's queue does not delay the count)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < until:
            row = conn.execute(
                "select count(*) from pg_catalog.pg_stat_activity where datname ="
                " current_database() and state = 'active' and pid <> pg_backend_pid()"
                " and query like '%%public.acquire(%%'"
            ).fetchone()
            busy.append((time.time(), int(row[0]) if row else 0))
            time.sleep(max(0.0, min(0.1, until - time.monotonic())))


def _schedule(
    load: Load, t0: float, call_bot: BotCall, calls: list[Call],
    db: Conn,
) -> list[threading.Thread]:  # fmt: skip
    """The bot's calls, each in its own thread at its time, and the policy rows at
    ``policies_at``; returns the threads started."""
    threads: list[threading.Thread] = []
    due: list[tuple[float, Callable[[], None]]] = []
    if load.policies and load.policies_at > 0:
        due.append((load.policies_at, lambda: add_policies(db)))
    if load.bot_every is not None:
        end = load.seconds if load.bot_until is None else min(load.bot_until, load.seconds)
        at = load.bot_from
        while at < end:
            due.append((at, lambda: calls.append(call_bot())))
            at += load.bot_every
    for at, action in sorted(due, key=lambda d: d[0]):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        t = threading.Thread(target=action)
        t.start()
        threads.append(t)
    return threads


def _gather(results: Any, procs: list[Any], timeout: float) -> list[Any]:
    """One message from each worker; a worker that died first is an error, not a hang."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=1.0))
        except queue.Empty:
            # A worker exits once its message is in the pipe: only a failed one, or all of
            # them gone with nothing left to read, means a message will never come.
            codes = [p.exitcode for p in procs]
            failed = any(c not in (None, 0) for c in codes) or None not in codes
            if failed or time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers answered {len(got)} of {len(procs)}; exit codes {codes}"
                ) from None
    return got


def _processes() -> Any:
    """Workers fork from a clean server that has imported this module once (fast to start, and
    no state of the parent's threads or connections is inherited)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["llm_limits.testing.policy_load"])
    return ctx


def _work(
    url: str, base_url: str, caller: str, max_wait: float, after: float, start: Any, results: Any
) -> None:
    """A worker process: warm up, say so, call back to back from ``start`` until SIGINT, then
    hand back the calls it finished."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ[KEY_VAR] = KEY_VALUE
    calls: list[Call] = []
    try:
        with Client(url, base_url=base_url, caller=caller) as client:
            try:
                client.generate(WARM_UP_MODEL, "warm-up", max_wait=30.0)  # paced, maybe
            except Exception as exc:
                results.put(f"{type(exc).__name__}: {exc}")
                return
            results.put(None)
            start.wait()
            time.sleep(after)
            while True:
                calls.append(timed_call(client, caller, max_wait))
    except KeyboardInterrupt:
        pass
    results.put(calls)


# --- what a run shows -----------------------------------------------------------------------


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else (
        values[0] if values else float("nan"))  # fmt: skip


@dataclass(frozen=True)
class WaitReports:
    """How well ``on_wait`` told the waiters. Of the calls told at least twice: how many were
    told places that never went up from their second report on (a call's first answer cannot
    count the places taken at the same moment and not yet committed), and over all their
    consecutive reports how many steps went up, and how many of those after the first (steps
    from a report before ``wait_reports``' ``settled`` are not judged). Over
    every report of a call that was then granted: |expected - real| / real of the wait still
    ahead, and expected / real, each at p50."""

    calls_told: int
    counting_down: int
    steps: int
    rises: int
    rises_after_first: int
    reports: int
    error_p50: float
    ratio_p50: float


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def burst_answered(calls: list[Call], workers: int) -> float:
    """When each of the run's first ``workers`` calls, begun together, had its first answer
    (epoch seconds). Places taken in one burst commit in another order than they were taken,
    and a place cannot count those ahead of it that are not committed yet; until then even a
    second report may miss some (a waiter that finds nobody ahead comes back at once)."""
    first = sorted(calls, key=lambda c: c.started)[:workers]
    return max(c.started + (c.waits[0].after if c.waits else c.seconds) for c in first)


def wait_reports(calls: list[Call], settled: float = 0.0) -> WaitReports:
    """``settled``: a step from a report given before then (epoch seconds) is not judged for
    counting down (see ``burst_answered``)."""
    told = [c for c in calls if len(c.waits) >= 2]
    ups = [
        [b.position > a.position and c.started + a.after >= settled for a, b in pairwise(c.waits)]
        for c in told
    ]
    errors: list[float] = []
    ratios: list[float] = []
    for c in calls:
        if c.outcome != "ok":
            continue
        for w in c.waits:
            real_ms = (c.seconds - w.after) * 1000
            if real_ms > 0:
                errors.append(abs(w.expected_ms - real_ms) / real_ms)
                ratios.append(w.expected_ms / real_ms)
    return WaitReports(
        len(told), sum(1 for u in ups if not any(u[1:])), sum(len(u) for u in ups),
        sum(sum(u) for u in ups), sum(sum(u[1:]) for u in ups), len(errors),
        _median(errors), _median(ratios),
    )  # fmt: skip


def batch_ahead_of_waiting_bot(db: Conn, out: Outcome) -> int:
    """Batch grants on 27b while the bot waited in its line: from the moment a bot call was
    first told it is in line (its ticket was then committed, visible to every waiter) to its
    grant (its ledger row, by request id), whether 27b or a fallback then served it."""
    ahead = 0
    for c in out.of(BOT):
        if not c.waits or c.request_id is None:
            continue  # granted at its first look: it never stood in line
        row = db.execute(
            "select count(*) from public.google_ai_reservations as b"
            " join public.google_ai_reservations as i on i.request_id = %s"
            " where b.caller = %s and b.model = %s"
            " and b.granted_at > to_timestamp(%s) and b.granted_at < i.granted_at",
            (c.request_id, BATCH, MODEL, c.started + c.waits[0].after),
        ).fetchone()
        ahead += int(row[0]) if row else 0  # type: ignore[call-overload]
    return ahead


def ledger(db: Conn) -> list[tuple[datetime, str, str]]:
    """(granted_at, caller, model) of every grant on 27b and 12b, in grant order."""
    return [
        (r[0], str(r[1]), str(r[2]))  # type: ignore[misc]
        for r in db.execute(
            "select granted_at, caller, model from public.google_ai_reservations"
            " where model in (%s, %s) order by granted_at",
            (MODEL, FALLBACK),
        ).fetchall()
    ]
