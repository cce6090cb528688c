"""Storage and writes per call, the current design next to the one before the
hardening of 2026-11-29 (migrations older than 20261129001200), in one run.

For each design, on its own database of one cluster:

* rows written per acquire+commit pair (heap tuples inserted, updated or
  deleted in every table, token_usage included) and the share of updates that
  stayed HOT (wrote no index entry);
* bytes per settled call in llm-limits' own tables (token_usage, the bot's
  history, is not counted), calls made in rounds with a plain VACUUM between
  them (as autovacuum does), i.e. the space a steady stream keeps;
* the projected steady state at 43,200 calls a day with the design's default
  retention, and again with every call for one of 2,000 end users (the keyed hash in
  the ledger and its index, one day row per person kept as long as the ledger);
* a refusal flood: 4 connections spinning on NO_WAIT refusals for 10 s, the
  audit rows and database bytes it adds;
* bench (a)/(b) pairs per second, both designs on the same cluster, for a
  before/after view (`make bench` reports (a)/(b) against pgbench separately).

    python -m bench.storage --admin-url postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from llm_limits.local import localstack

REPO = Path(__file__).resolve().parents[1]
HARDENING = "20261129001200"
CALLS_PER_DAY = 43_200
KEYS = 3  # three Cloud projects at gemma-3-27b's full RPD
ROUND = 2000  # calls between two vacuums (about 1 h 7 min of traffic at 43,200 a day)
PEOPLE = 2000  # the bot's end users a day
Conn = psycopg.Connection[tuple[Any, ...]]

# One call as the bot makes it: a realistic caller, request id, estimate and usage, settled
# as its design settles a 200 (the design before the hardening had commit_usage, gone since
# 20261206003000; now settle reads Google's answer).
PAIR = """\\set g random(1, 3)
\\set m random(1, 999999999)
\\set u random(1, {people})
select granted::int as ok, reservation_id as rid
from public.acquire(model => 'store-model', tokens => 1200,
                    key_aliases => array['project-' || :g], caller => 'festival-bot',
                    request_id => 'tg-' || :m{end_user}) \\gset
\\if :ok
{settle}
\\endif
"""
SETTLE_NOW = """select action from public.settle(':rid'::uuid, 200, '{"usageMetadata":
    {"promptTokenCount": 1013, "candidatesTokenCount": 240},
    "candidates": [{"finishReason": "STOP"}]}');"""
SETTLE_BEFORE = (
    """select public.commit_usage(':rid'::uuid, 1013, 240, '{"finish_reason": "STOP"}');"""
)


def connect(url: str) -> Conn:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def design_db(admin_url: str, name: str, before: str | None) -> str:
    """A database with every migration, or only those older than `before`."""
    with connect(admin_url) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    localstack.bootstrap(url)
    if before is None:
        localstack.push(url, REPO)
        return url
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "supabase" / "migrations").mkdir(parents=True)
        shutil.copy(REPO / "supabase" / "config.toml", project / "supabase" / "config.toml")
        for migration in sorted((REPO / "supabase" / "migrations").glob("*.sql")):
            if migration.name[:14] < before:
                shutil.copy(migration, project / "supabase" / "migrations" / migration.name)
        # The CLI lives in the repository's node_modules; the project is elsewhere.
        subprocess.run(
            [
                *localstack.supabase_cli(REPO),
                "db",
                "push",
                f"--remote={url}",
                "--yes",
                "--workdir",
                str(project),
            ],
            capture_output=True,
            check=True,
            cwd=project,
        )
    return url


def seed(url: str) -> None:
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values "
            "('store-model', 'store-model-it', 1000000000, 2000000000, 2000000000), "
            "('flood-model', 'flood-model-it', 1, 1000000, 1000000)"
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "select 'project-' || i, 'GOOGLE_API_KEY_' || i, 'project-' || i "
            "from generate_series(1, %s) as i",
            (KEYS,),
        )


def our_sizes(conn: Conn) -> dict[str, int]:
    """Bytes of every llm-limits table (heap, indexes, TOAST) but token_usage."""
    rows = conn.execute(
        "select format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) "
        "from pg_class as c "
        "join pg_namespace as n on n.oid = c.relnamespace "
        "where c.relkind = 'r' and n.nspname in ('public', 'google_ai_internal') "
        "  and c.relname <> 'token_usage' "
        "  and not exists (select from pg_depend as d where d.classid = 'pg_class'::regclass "
        "                  and d.objid = c.oid and d.deptype = 'e')"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def write_stats(conn: Conn) -> tuple[int, int, int]:
    """(rows written, updates, HOT updates) over all tables of ours, so far."""
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0), "
        "coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0) "
        "from pg_stat_user_tables where schemaname in ('public', 'google_ai_internal')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def vacuum_ours(conn: Conn) -> None:
    for table in our_sizes(conn):
        conn.execute(f"vacuum {table}")


def pgbench_script(url: str, script: Path, args: list[str]) -> float:
    out = subprocess.run(
        ["pgbench", "-n", "-f", str(script), *args, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


# Each call for one of the people, as the bot passes its Telegram user (the default class has
# no per-person limit, so every call is a grant, as in the runs without end users).
FOR_A_PERSON = ", end_user => 'tg:' || :u"


def per_call(url: str, pairs: int, settle: str, end_user: str = "") -> dict[str, float]:
    """Rows written and bytes kept per settled call (`settle`: the design's 200; `end_user`:
    FOR_A_PERSON, or nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "pair.sql"
        script.write_text(PAIR.format(settle=settle, people=PEOPLE, end_user=end_user))
        with connect(url) as conn:
            pgbench_script(url, script, ["-c", "2", "-t", "200"])  # warm up, first pages
            vacuum_ours(conn)
            time.sleep(1)
            sizes0, (rows0, upd0, hot0) = our_sizes(conn), write_stats(conn)
            # In rounds with a plain VACUUM between them, as autovacuum runs on a
            # live project: space freed by old row versions is reused.
            rounds = max(pairs // ROUND, 1)
            for _ in range(rounds):
                pgbench_script(url, script, ["-c", "4", "-j", "2", "-t", str(ROUND // 4)])
                vacuum_ours(conn)
            time.sleep(1.5)  # backends flush their statistics on exit
            rows1, upd1, hot1 = write_stats(conn)
            sizes1 = our_sizes(conn)
            settled = conn.execute(
                "select count(*) from public.google_ai_reservations where status = 'committed'"
            ).fetchone()
    assert settled is not None and settled[0] >= pairs
    n = max(pairs // ROUND, 1) * ROUND
    grown = {t: (sizes1.get(t, 0) - sizes0.get(t, 0)) / n for t in sizes1}
    ledger = grown.get("public.google_ai_reservations", 0.0)
    return {
        "rows_per_pair": (rows1 - rows0) / n,
        "hot_share": (hot1 - hot0) / max(upd1 - upd0, 1),
        "bytes_per_call": sum(grown.values()),
        "ledger_bytes_per_call": ledger,
        "audit_bytes_per_call": sum(grown.values()) - ledger,
    }


def rollup_row_bytes(url: str, rows: int = 20_000) -> dict[str, float]:
    """Bytes per per-minute rollup row and per maintenance log row."""
    with connect(url) as conn:
        before = our_sizes(conn)
        conn.execute(
            "insert into public.google_ai_usage_counters (key_alias, model, bucket_kind, "
            "bucket_start, rpm_used, tpm_used, rpd_used) "
            "select 'project-' || (i %% 3 + 1), 'store-model', 'minute', "
            "  timestamptz '2020-01-01' + (i / 3) * interval '1 minute', 10, 12000, 0 "
            "from generate_series(1, %s) as i",
            (rows,),
        )
        for _ in range(200):
            conn.execute("select public.run_maintenance()")
        vacuum_ours(conn)
        after = our_sizes(conn)
        conn.execute(
            "delete from public.google_ai_usage_counters where bucket_start < '2021-01-01'"
        )
    return {
        "minute_row_bytes": (
            after["public.google_ai_usage_counters"] - before["public.google_ai_usage_counters"]
        )
        / rows,
        "log_row_bytes": (
            after["public.google_ai_maintenance_log"] - before["public.google_ai_maintenance_log"]
        )
        / 200,
    }


def retention_days(url: str) -> dict[str, float]:
    with connect(url) as conn:
        row = conn.execute(
            "select to_jsonb(s) from public.google_ai_settings as s where s.id"
        ).fetchone()
    assert row is not None
    days = {}
    for name in ("ledger_retention", "audit_retention", "rollup_retention"):
        value = row[0].get(name)
        days[name] = float(value.split()[0]) if value else float("nan")
    return days


def refusal_flood(url: str, connections: int = 4, seconds: float = 10.0) -> dict[str, float]:
    """NO_WAIT refusals in a tight loop: audit rows and database bytes added."""
    with connect(url) as conn:
        granted = conn.execute(
            "select granted from public.acquire('flood-model', 1, caller => 'notebook')"
        ).fetchone()
        assert granted == (True,)
        conn.execute("checkpoint")
        size0 = conn.execute("select pg_database_size(current_database())").fetchone()
        audit0 = conn.execute("select count(*) from public.google_ai_audit_log").fetchone()
    refusals = [0] * connections
    stop = time.monotonic() + seconds

    def spin(i: int) -> None:
        with connect(url) as c:
            while time.monotonic() < stop:
                c.execute(
                    "select granted from public.acquire('flood-model', 1, caller => 'notebook')"
                )
                refusals[i] += 1

    threads = [threading.Thread(target=spin, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with connect(url) as conn:
        conn.execute("checkpoint")
        size1 = conn.execute("select pg_database_size(current_database())").fetchone()
        audit1 = conn.execute("select count(*) from public.google_ai_audit_log").fetchone()
    assert size0 and size1 and audit0 and audit1
    return {
        "flood_refusals": float(sum(refusals)),
        "flood_audit_rows": float(audit1[0] - audit0[0]),
        "flood_bytes": float(size1[0] - size0[0]),
    }


def pairs_per_second(url: str, seconds: int, pair: str) -> dict[str, float]:
    """Bench (a) and (b) on this design: 16 clients, 16 groups / one hot group; `pair` names
    the design's scripts (bench/acquire_<pair>_spread.sql and _hot.sql)."""
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd) values "
            "('bench-free', 'bench-free', 1000000000, 2000000000, 2000000000)"
        )
        conn.execute(
            "insert into public.google_ai_api_keys (key_alias, env_var_name, quota_group) "
            "select 'bench-' || i, 'BENCH_' || i, 'bench-group-' || i "
            "from generate_series(1, 16) as i"
        )
    common = ["-c", "16", "-j", "2", "-T", str(seconds)]
    spread = pgbench_script(url, REPO / f"bench/acquire_{pair}_spread.sql", common)
    hot = pgbench_script(
        url, REPO / f"bench/acquire_{pair}_hot.sql", [*common, "-D", "model=bench-free"]
    )
    return {"spread_pairs": spread, "hot_pairs": hot}


def people_day_rows(url: str) -> None:
    """Today's day row of every person, as after a day's first calls (each grant then only
    updates its person's row in place)."""
    with connect(url) as conn:
        conn.execute(
            "insert into public.google_ai_end_user_usage (end_user_hash, day, requests) "
            "select google_ai_internal.end_user_hash('tg:' || i), "
            "  (google_ai_internal.clock() at time zone s.rpd_time_zone)::date, 1 "
            "from generate_series(1, %s) as i, public.google_ai_settings as s "
            "on conflict do nothing",
            (PEOPLE,),
        )


def day_row_bytes(url: str) -> float:
    with connect(url) as conn:
        conn.execute("vacuum public.google_ai_end_user_usage")
        row = conn.execute(
            "select pg_total_relation_size('public.google_ai_end_user_usage')::float8 / count(*) "
            "from public.google_ai_end_user_usage"
        ).fetchone()
    assert row is not None
    return float(row[0])


def measure_end_users(admin_url: str, pairs: int, new: dict[str, float]) -> dict[str, float]:
    """The current design with every call for one of PEOPLE end users; `new` is the current
    design's run without them (its rollup and log row sizes, its retention)."""
    url = design_db(admin_url, "bench_storage_end_users", None)
    seed(url)
    people_day_rows(url)
    m = per_call(url, pairs, SETTLE_NOW, FOR_A_PERSON)
    m["day_row_bytes"] = day_row_bytes(url)
    # Day rows live as long as the ledger's days (run_maintenance), and one more: today's.
    m["steady_bytes"] = (
        CALLS_PER_DAY * m["ledger_bytes_per_call"] * new["ledger_retention"]
        + CALLS_PER_DAY * m["audit_bytes_per_call"] * new["audit_retention"]
        + KEYS * 1440 * new["minute_row_bytes"] * new["rollup_retention"]
        + 288 * new["log_row_bytes"] * new["audit_retention"]
        + PEOPLE * (new["ledger_retention"] + 1) * m["day_row_bytes"]
    )
    return m


def measure(
    admin_url: str, name: str, before: str | None, pairs: int, seconds: int
) -> dict[str, float]:
    url = design_db(admin_url, name, before)
    seed(url)
    m = per_call(url, pairs, SETTLE_NOW if before is None else SETTLE_BEFORE)
    m.update(rollup_row_bytes(url))
    m.update(retention_days(url))
    m.update(refusal_flood(url))
    m.update(pairs_per_second(url, seconds, "settle" if before is None else "commit"))
    day_bytes = CALLS_PER_DAY * m["ledger_bytes_per_call"]
    minute_rows_per_day = KEYS * 1440
    if before is None:
        # Calls are kept ledger_retention days; per-minute rollups rollup_retention days;
        # maintenance log rows (every 5 minutes) audit_retention days.
        m["steady_bytes"] = (
            day_bytes * m["ledger_retention"]
            + CALLS_PER_DAY * m["audit_bytes_per_call"] * m["audit_retention"]
            + minute_rows_per_day * m["minute_row_bytes"] * m["rollup_retention"]
            + 288 * m["log_row_bytes"] * m["audit_retention"]
        )
    else:
        # Per-minute rollups were never trimmed (not bounded; left out here).
        m["steady_bytes"] = (
            day_bytes * m["ledger_retention"]
            + CALLS_PER_DAY * m["audit_bytes_per_call"] * m["audit_retention"]
            + 288 * m["log_row_bytes"] * m["audit_retention"]
        )
    return m


def storage(admin_url: str, pairs: int = 20_000, seconds: int = 10) -> dict[str, float]:
    """Both designs; keys are prefixed old_ (before the hardening) and new_; eu_ is the
    current design again with end users."""
    out: dict[str, float] = {}
    for prefix, before in (("old_", HARDENING), ("new_", None)):
        m = measure(admin_url, f"bench_storage_{prefix}design", before, pairs, seconds)
        out.update({prefix + k: v for k, v in m.items()})
    new = {k[len("new_") :]: v for k, v in out.items() if k.startswith("new_")}
    out.update({"eu_" + k: v for k, v in measure_end_users(admin_url, pairs, new).items()})
    return out


def render(m: dict[str, float], baseline_tps: float | None = None) -> str:
    def mb(x: float) -> str:
        return f"{x / 1e6:.0f} MB"

    def pairs(x: float) -> str:
        return f"{x:.0f}" + (f" ({x / baseline_tps:.2f}×)" if baseline_tps else "")

    o, n = ("old_", "new_")
    rows = [
        (
            "rows written per acquire+commit pair (HOT share of updates)",
            f"{m[o + 'rows_per_pair']:.1f} ({m[o + 'hot_share'] * 100:.0f}% HOT)",
            f"{m[n + 'rows_per_pair']:.1f} ({m[n + 'hot_share'] * 100:.0f}% HOT)",
            "fewer",
        ),
        (
            "bytes per settled call in llm-limits' tables (ledger + audit)",
            f"{m[o + 'bytes_per_call']:.0f} ({m[o + 'ledger_bytes_per_call']:.0f} +"
            f" {m[o + 'audit_bytes_per_call']:.0f})",
            f"{m[n + 'bytes_per_call']:.0f} ({m[n + 'ledger_bytes_per_call']:.0f} +"
            f" {m[n + 'audit_bytes_per_call']:.0f})",
            "≤ ~400",
        ),
        (
            "retention: calls / audit / minute rollups (days)",
            f"{m[o + 'ledger_retention']:.0f} / {m[o + 'audit_retention']:.0f} / never trimmed",
            f"{m[n + 'ledger_retention']:.0f} / {m[n + 'audit_retention']:.0f} /"
            f" {m[n + 'rollup_retention']:.0f}",
            "",
        ),
        (
            f"steady state at {CALLS_PER_DAY:,} calls/day, default retention",
            mb(m[o + "steady_bytes"]) + " (+ rollups, unbounded)",
            mb(m[n + "steady_bytes"]),
            "≤ 200 MB",
        ),
        (
            f"the same with {PEOPLE:,} end users (per call: ledger + audit; bytes per day row)",
            "",
            f"{m['eu_bytes_per_call']:.0f} per call ({m['eu_ledger_bytes_per_call']:.0f} +"
            f" {m['eu_audit_bytes_per_call']:.0f}), {m['eu_day_row_bytes']:.0f} per day row;"
            f" steady state {mb(m['eu_steady_bytes'])}",
            "≤ 200 MB",
        ),
        (
            "refusal flood, 4 connections × 10 s NO_WAIT: refusals → audit rows, DB growth",
            f"{m[o + 'flood_refusals']:.0f} → {m[o + 'flood_audit_rows']:.0f},"
            f" {m[o + 'flood_bytes'] / 1e6:.1f} MB",
            f"{m[n + 'flood_refusals']:.0f} → {m[n + 'flood_audit_rows']:.0f},"
            f" {m[n + 'flood_bytes'] / 1e6:.1f} MB",
            "≤ 200 rows, ≤ 4 MB",
        ),
        (
            "(a) pairs/s, 16 clients, 16 groups",
            pairs(m[o + "spread_pairs"]),
            pairs(m[n + "spread_pairs"]),
            "≥ 0.36× pgbench -N",
        ),
        (
            "(b) pairs/s, 16 clients, one hot group",
            pairs(m[o + "hot_pairs"]),
            pairs(m[n + "hot_pairs"]),
            "≥ 0.21× pgbench -N",
        ),
    ]
    lines = [
        "| storage and writes per call | before 2026-11-29 | now | goal |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--baseline", action="store_true", help="also run pgbench -N for ratios")
    args = parser.parse_args()
    m = storage(args.admin_url, args.pairs, args.seconds)
    baseline = None
    if args.baseline:
        # The same baseline as bench/run.py: pgbench -N, 16 clients, on this cluster.
        from bench.run import fresh_db, pgbench

        base = fresh_db(args.admin_url, "bench_storage_pgbench")
        subprocess.run(["pgbench", "-i", "-q", "-s", "16", base], capture_output=True, check=True)
        baseline = pgbench(base, ["-N"], args.seconds)
        print(f"baseline_tps = {baseline:.1f}")
    for k, v in sorted(m.items()):
        print(f"{k} = {v:.3f}")
    print(render(m, baseline))


if __name__ == "__main__":
    main()
