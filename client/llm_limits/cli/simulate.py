"""``llm-limits simulate``: N concurrent callers through the real client against a fake Gemini.

Each worker is a thread calling ``Client.generate`` in a loop, as a bot would; they share one
``Client`` (it is thread-safe: a locked free list of connections). Unless a base URL is given,
an in-process ``FakeGemini`` plays Google, with one project per quota group holding that
group's keys and the database's limits for the model, so a 429 from it means the controller
let through more than Google allows.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from llm_limits.cli import queries, render
from llm_limits.cli.chart import METRICS, Grant, Metric
from llm_limits.cli.common import DbUrl, fail, show_client_log, stderr
from llm_limits.cli.connect import CliError, Conn, connect, resolve_url
from llm_limits.cli.models import resolve_model
from llm_limits.errors import LimitsError, RateLimited
from llm_limits.keys import resolve_keys
from llm_limits.local import fake_gemini

# A limit the database leaves unenforced (null) must not bind inside the fake either.
UNLIMITED = 10**9


@dataclass(frozen=True)
class Setup:
    """What a run needs from the database, read once before it starts."""

    model: str
    api_model: str
    window_s: float
    guard_s: float
    model_limits: fake_gemini.Limits
    group_rpm: dict[str, int | None]  # the effective RPM per quota group, for this model
    group_tpm: dict[str, int | None]  # and TPM
    group_of: dict[str, str]  # alias -> quota group, for the keys this machine holds
    projects: dict[str, list[str]]  # quota group -> key values: the fake's projects
    overridden: list[str]  # groups whose own limits differ from the model's

    @property
    def groups(self) -> list[str]:
        return sorted(self.projects)


def read_setup(conn: Conn, model_row: Mapping[str, Any]) -> Setup:
    model = str(model_row["model"])
    settings = conn.execute(queries.SETTINGS).fetchone()
    if settings is None:
        raise CliError("google_ai_settings has no row; are the migrations applied?")
    rows = conn.execute(queries.ACTIVE_KEYS).fetchall()
    held = resolve_keys((r["key_alias"], r["env_var_name"]) for r in rows)
    group_of = {r["key_alias"]: r["quota_group"] for r in rows if held.value(r["key_alias"])}
    if not group_of:
        raise CliError(
            "this machine holds none of the active keys: export the env vars named by "
            "`llm-limits keys list`"
        )
    projects: dict[str, list[str]] = {}
    for alias, group in group_of.items():
        projects.setdefault(group, []).append(str(held.value(alias)))
    status = [r for r in conn.execute(queries.QUOTA_STATUS).fetchall() if r["model"] == model]
    group_rpm = {r["quota_group"]: r["rpm_limit"] for r in status if r["quota_group"] in projects}
    group_tpm = {r["quota_group"]: r["tpm_limit"] for r in status if r["quota_group"] in projects}
    base = (model_row["rpm"], model_row["tpm"], model_row["rpd"])
    overridden = [
        r["quota_group"]
        for r in status
        if r["quota_group"] in projects and (r["rpm_limit"], r["tpm_limit"], r["rpd_limit"]) != base
    ]
    limits = fake_gemini.Limits(*(UNLIMITED if n is None else max(1, n) for n in base))
    return Setup(
        model=model,
        api_model=str(model_row["api_model"] or model),
        window_s=settings["window_ms"] / 1000,
        guard_s=settings["window_guard_ms"] / 1000,
        model_limits=limits,
        group_rpm=group_rpm,
        group_tpm=group_tpm,
        group_of=group_of,
        projects=projects,
        overridden=overridden,
    )


@contextmanager
def fake_server(setup: Setup, latency: float, port: int) -> Iterator[fake_gemini.FakeGemini]:
    """An in-process FakeGemini with the database's projects, limits and window."""
    limits = {setup.model: setup.model_limits, setup.api_model: setup.model_limits}
    with fake_gemini.FakeGemini(
        setup.projects, limits, latency=latency, port=port, window=setup.window_s
    ) as fake:
        yield fake


@dataclass
class Tally:
    """What the workers saw, updated under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    grants: Counter[str] = field(default_factory=Counter)  # per quota group
    refusals: Counter[str] = field(default_factory=Counter)  # per reason
    errors: Counter[str] = field(default_factory=Counter)
    cut_off: int = 0  # calls still waiting for quota when the run ended
    prompt_tokens: int = 0
    group_tokens: Counter[str] = field(default_factory=Counter)  # Google-counted input tokens
    completion_tokens: int = 0
    in_flight: int = 0
    recent: dict[str, deque[float]] = field(default_factory=dict)  # group -> commit times

    @property
    def total_grants(self) -> int:
        return sum(self.grants.values())

    def in_window(self, group: str, now: float, window_s: float) -> int:
        times = self.recent.get(group)
        if not times:
            return 0
        while times and times[0] <= now - window_s:
            times.popleft()
        return len(times)


@dataclass
class Outcome:
    tally: Tally
    started: float  # epoch seconds
    elapsed: float
    caller: str
    fake_429s: int | None  # None when the server is not ours to ask
    fake_grants: dict[str, list[float]] | None  # group -> epoch seconds, from the fake
    interrupted: bool = False


def run_workers(
    client: Any,
    setup: Setup,
    tally: Tally,
    *,
    workers: int,
    duration: float,
    wait: bool,
    max_wait: float | None,
    caller: str,
    tick: Callable[[float], None],
    prompt: Callable[[int, int], str] | None = None,
) -> tuple[float, float, bool]:
    """Run the workers for ``duration`` seconds; ``tick(elapsed)`` runs about 4 times a second.

    ``prompt(worker, i)`` gives each call's text (default: a one-line request).

    Returns (start epoch, elapsed seconds, interrupted).
    """
    stop = threading.Event()
    start_mono = time.monotonic()
    start_epoch = time.time()
    deadline = start_mono + duration

    def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0.05:
                return
            i += 1
            text = (
                prompt(n, i)
                if prompt is not None
                else f"simulated request {i} from worker {n}: reply with one short sentence."
            )
            with tally.lock:
                tally.in_flight += 1
            try:
                client.generate(
                    setup.model,
                    text,
                    mode="WAIT" if wait else "NO_WAIT",
                    max_wait=left if max_wait is None else min(max_wait, left),
                    caller=caller,
                )
            except RateLimited as exc:
                ended = exc.reason == "wait_timeout" and deadline - time.monotonic() < 0.1
                with tally.lock:
                    if ended:
                        tally.cut_off += 1
                    else:
                        tally.refusals[exc.reason] += 1
                if not wait:
                    pause = exc.retry_after if exc.retry_after is not None else 0.5
                    stop.wait(min(max(pause, 0.01), max(deadline - time.monotonic(), 0)))
            except LimitsError as exc:
                with tally.lock:
                    tally.errors[type(exc).__name__] += 1
                stop.wait(0.2)
            except Exception as exc:  # Google's errors after the client's last attempt
                code = getattr(exc, "code", None)
                with tally.lock:
                    tally.errors[f"http {code}" if code else type(exc).__name__] += 1
                stop.wait(0.2)
            finally:
                with tally.lock:
                    tally.in_flight -= 1

    threads = [
        threading.Thread(target=worker, args=(n,), name=f"simulate-{n}", daemon=True)
        for n in range(workers)
    ]
    for t in threads:
        t.start()
    interrupted = False
    try:
        while any(t.is_alive() for t in threads):
            tick(time.monotonic() - start_mono)
            time.sleep(0.25)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        # Calls cut short from here on are teardown, not findings: keep the log quiet.
        logging.getLogger("llm_limits").setLevel(logging.CRITICAL)
        grace = time.monotonic() + 2.0
        for t in threads:
            t.join(timeout=max(0.0, grace - time.monotonic()))
    tick(time.monotonic() - start_mono)
    return start_epoch, time.monotonic() - start_mono, interrupted


def on_usage_recorder(tally: Tally, setup: Setup) -> Callable[[Any], None]:
    """The Client's ``on_usage`` hook: counts grants per group and tokens."""

    def record(usage: Any) -> None:
        group = setup.group_of.get(usage.key_alias, usage.key_alias)
        with tally.lock:
            tally.grants[group] += 1
            tally.prompt_tokens += usage.prompt_tokens
            tally.group_tokens[group] += usage.prompt_tokens
            tally.completion_tokens += usage.completion_tokens
            tally.recent.setdefault(group, deque()).append(time.time())

    return record


def new_caller() -> str:
    return f"simulate-{uuid.uuid4().hex[:8]}"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def waits_of(conn: Conn, caller: str, since: float) -> list[float]:
    """Seconds each grant of this run waited for quota (all of its wait), as the database saw."""
    rows = conn.execute(
        queries.WAITS_OF_CALLER, {"caller": caller, "since": epoch_to_dt(since)}
    ).fetchall()
    return [r["waited_ms"] / 1000 for r in rows if r["waited_ms"] is not None]


def grants_from_ledger(conn: Conn, model: str, caller: str, since: float) -> dict[str, list[Grant]]:
    """Per quota group, (granted at, tokens counted against TPM) of this run's grants."""
    rows = conn.execute(
        queries.GRANTS_OF_CALLER, {"model": model, "caller": caller, "since": epoch_to_dt(since)}
    ).fetchall()
    out: dict[str, list[Grant]] = {}
    for r in rows:
        out.setdefault(r["quota_group"], []).append(
            (r["granted_at"].timestamp(), int(r["counted_tokens"]))
        )
    return out


def grants_from_fake(stats: fake_gemini.Stats, setup: Setup) -> dict[str, list[Grant]]:
    """Per project (quota group), (arrival, input tokens the fake counted) of its grants."""
    return {
        project: [(g.ts, g.input_tokens) for g in grants]
        for (project, model), grants in stats.grants.items()
        if model in (setup.model, setup.api_model)
    }


def chart_metric(chart_of: str | None, prompt_chars: str | None) -> Metric:
    """What the chart draws: ``--chart-of``, else tokens for a run of long prompts."""
    if chart_of is None:
        return "tokens" if prompt_chars else "requests"
    for metric in METRICS:
        if chart_of == metric:
            return metric
    raise CliError(f"--chart-of expects one of {', '.join(METRICS)}; got {chart_of!r}")


def chart_limits(setup: Setup, metric: Metric) -> dict[str, int | None]:
    """Each group's limit the chart's lines are drawn against: RPM, or TPM for tokens."""
    limits = setup.group_tpm if metric == "tokens" else setup.group_rpm
    return {g: limits.get(g) for g in setup.groups}


def rate_limited_in_db(conn: Conn, model: str, since: float) -> int:
    row = conn.execute(
        queries.RATE_LIMITED_OF_MODEL, {"model": model, "since": epoch_to_dt(since)}
    ).fetchone()
    return int(row["n"]) if row else 0


def epoch_to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def windows_begun(elapsed: float, window_s: float) -> int:
    """A sliding window admits a full RPM at the start of every window the run reaches."""
    return max(1, math.ceil(elapsed / window_s - 1e-9))


def utilization(grants: int, rpm: int | None, elapsed: float, window_s: float) -> float | None:
    if not rpm:
        return None
    return grants / (rpm * windows_begun(elapsed, window_s))


def usage_lines(
    used: Mapping[str, int],
    limits: Mapping[str, int | None],
    groups: list[str],
    elapsed: float,
    window_s: float,
) -> list[str]:
    """``group: used/allowed = share`` per group, allowed being the limit per window begun."""
    windows = windows_begun(elapsed, window_s)
    lines = []
    for group in groups:
        limit = limits.get(group)
        allowed = "unlimited" if limit is None else f"{limit * windows:,}"
        share = utilization(used[group], limit, elapsed, window_s)
        lines.append(
            f"  {group}: {used[group]:,}/{allowed} = {'n/a' if share is None else f'{share:.0%}'}"
        )
    return lines


def prose_prompts(spec: str, language: str) -> Callable[[int, int], str]:
    """Prompts of prose of ``MIN-MAX`` characters, e.g. long Russian pages for a TPM-bound run."""
    from llm_limits.local.prose import page

    low, _, high = spec.partition("-")
    if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high)):
        raise CliError(f"--prompt-chars expects MIN-MAX characters, e.g. 8000-30000; got {spec!r}")
    pages = [page(int(low) + (int(high) - int(low)) * k // 19, language=language, seed=k)
             for k in range(20)]  # fmt: skip

    def pick(worker: int, i: int) -> str:
        return pages[(worker * 7 + i * 3) % len(pages)]

    return pick


def summarize_waits(waits: list[float]) -> str:
    if not waits:
        return "waits: none recorded"
    return (
        f"waits: p50 {fmt_s(statistics.median(waits))}  p95 {fmt_s(percentile(waits, 95))}"
        f"  max {fmt_s(max(waits))}  (n={len(waits)})"
    )


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


# -- the command: orchestration and report ------------------------------------------------------


def simulate(
    workers: Annotated[int, typer.Option(min=1, help="Concurrent callers (threads).")] = 8,
    duration: Annotated[float, typer.Option(min=1, help="Seconds to run.")] = 60.0,
    model: Annotated[str, typer.Option(help="Model to call.")] = "gemma-3-27b",
    fake_port: Annotated[
        int, typer.Option("--fake-port", min=0, help="Port of the in-process fake (0: free).")
    ] = 0,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Use this Gemini endpoint instead of an in-process fake."),
    ] = None,
    latency: Annotated[
        float, typer.Option(min=0, help="Seconds the in-process fake takes per call.")
    ] = 0.3,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="NO_WAIT calls; sleep retry_after on refusal.")
    ] = False,
    max_wait: Annotated[
        float | None,
        typer.Option(min=0, help="WAIT budget per call, seconds; default: until the run ends."),
    ] = None,
    chart: Annotated[Path, typer.Option(help="Where to write the PNG chart.")] = Path(
        ".llm-limits/simulate.png"
    ),
    db_url: DbUrl = None,
    prompt_chars: Annotated[
        str | None,
        typer.Option(help="Prose prompts of MIN-MAX characters (e.g. 8000-30000): TPM-bound."),
    ] = None,
    language: Annotated[str, typer.Option(help="Prose language: ru or en.")] = "ru",
    chart_of: Annotated[
        str | None,
        typer.Option(
            "--chart-of",
            help="What the chart draws per window: requests (vs RPM) or tokens (vs TPM); "
            "default: tokens with --prompt-chars, else requests.",
        ),
    ] = None,
) -> None:
    """A load run through the real client against a fake Gemini; exit 1 if any 429 got through.

    Reports grants, refusals, waits (p50/p95), tokens, the fake server's 429s and the
    utilization of what the limits allowed, and writes a chart of grants (or, for a TPM-bound
    run, their input tokens) per rolling window against the limit.
    """
    from contextlib import nullcontext

    from llm_limits import Client
    from llm_limits.cli import chart as charts

    if base_url and fake_port:
        fail("give --fake-port or --base-url, not both")
    metric = chart_metric(chart_of, prompt_chars)
    charts.load_pyplot()  # without the cli extra's matplotlib, say so before the run, not after
    show_client_log()
    url = resolve_url(db_url)
    with connect(url) as conn:
        setup = read_setup(conn, resolve_model(conn, model))
    tally = Tally()
    caller = new_caller()
    prompts = prose_prompts(prompt_chars, language) if prompt_chars else None
    err = stderr()
    server = nullcontext(None) if base_url else fake_server(setup, latency, fake_port)
    with server as fake:
        endpoint = base_url or (fake.base_url if fake else None)
        err.print(
            f"simulate: {workers} workers × {duration:g}s on {setup.model} against {endpoint} "
            f"({'in-process fake' if fake else 'external server'}); groups: "
            + ", ".join(f"{g} ({len(setup.projects[g])} keys)" for g in setup.groups)
        )
        client = Client(
            dsn=url,
            base_url=endpoint,
            on_usage=on_usage_recorder(tally, setup),
            caller=caller,
            timeout=max(30.0, latency * 10),
        )
        view = progress_view(setup, tally, fake, duration)
        with client, Live(view(0.0), console=err, auto_refresh=False, transient=False) as live:
            started, elapsed, interrupted = run_workers(
                client,
                setup,
                tally,
                workers=workers,
                duration=duration,
                wait=not no_wait,
                max_wait=max_wait,
                caller=caller,
                tick=lambda t: live.update(view(t), refresh=True),
                prompt=prompts,
            )
        stats = fake.stats() if fake else None
    with connect(url) as conn:
        waits = waits_of(conn, caller, started)
        if stats is not None:
            fake_429s = stats.rate_limited
            by_project = grants_from_fake(stats, setup)
        else:
            fake_429s = rate_limited_in_db(conn, setup.model, started)
            by_project = grants_from_ledger(conn, setup.model, caller, started)
    what, limit = ("input tokens", "TPM") if metric == "tokens" else ("grants", "RPM")
    chart_path = charts.write_chart(
        chart,
        title=f"{setup.model}: {what} per rolling {setup.window_s:g} s window vs {limit}",
        grants=by_project,
        limits=chart_limits(setup, metric),
        metric=metric,
        start=started,
        end=started + elapsed,
        window_s=setup.window_s,
    )
    t = tally
    print()
    print(f"simulate report: {setup.model}, {workers} workers, {elapsed:.1f}s, "
          f"window {setup.window_s:g}s (+{setup.guard_s:g}s guard)")  # fmt: skip
    refusals = ", ".join(f"{r}={n}" for r, n in sorted(t.refusals.items())) or "none"
    errors = ", ".join(f"{e}={n}" for e, n in sorted(t.errors.items())) or "none"
    if interrupted:
        print("interrupted: the figures cover the run until Ctrl-C")
    print(f"grants: {t.total_grants}")
    print(f"refusals: {sum(t.refusals.values())} ({refusals})")
    print(f"errors: {sum(t.errors.values())} ({errors})")
    if t.cut_off:
        print(f"still waiting for quota when the run ended: {t.cut_off}")
    print(summarize_waits(waits))
    print(f"tokens: {t.prompt_tokens:,} prompt + {t.completion_tokens:,} completion")
    print(f"429s: {fake_429s}")
    if stats is None:
        print("  (429s as reported to the database by the client; the server is not ours)")
    windows = windows_begun(elapsed, setup.window_s)
    print(f"utilization = grants / (rpm × {windows} windows begun):")
    for line in usage_lines(t.grants, setup.group_rpm, setup.groups, elapsed, setup.window_s):
        print(line)
    print(f"TPM used = Google-counted input tokens / (tpm × {windows} windows begun):")
    for line in usage_lines(t.group_tokens, setup.group_tpm, setup.groups, elapsed, setup.window_s):
        print(line)
    if setup.overridden and fake is not None:
        print(f"  note: {', '.join(setup.overridden)} have their own limits; the fake applies "
              f"the model's")  # fmt: skip
    print(f"chart: {chart_path}")
    if interrupted:
        raise typer.Exit(130)
    if fake_429s > 0:
        raise typer.Exit(1)


def progress_view(setup: Any, tally: Any, fake: Any, duration: float) -> Any:
    """A function of elapsed seconds giving the live progress panel of ``simulate``."""

    def view(elapsed: float) -> Group:
        now = time.time()
        with tally.lock:
            grants, refused = tally.total_grants, sum(tally.refusals.values())
            errors, in_flight = sum(tally.errors.values()), tally.in_flight
            windows = {g: tally.in_window(g, now, setup.window_s) for g in setup.groups}
        line = Text(f"{min(elapsed, duration):5.1f}/{duration:g}s  ")
        line.append(f"grants {grants}  refusals {refused}  errors {errors}  in flight {in_flight}")
        if fake is not None:
            n429 = fake.stats().rate_limited
            line.append(f"  429s {n429}", style="red" if n429 else "green")
        head = Table.grid(padding=(0, 1))
        head.add_row(ProgressBar(total=duration, completed=min(elapsed, duration), width=30), line)
        parts: list[Any] = [head]
        for group, used in windows.items():
            row = Text(f"  {group:<24} ")
            row.append_text(render.usage(used, setup.group_rpm.get(group), width=20))
            row.append(f"  in the last {setup.window_s:g}s", style="dim")
            parts.append(row)
        return Group(*parts)

    return view
