#!/usr/bin/env bash
# `make test`: everything CI checks, on throwaway PostgreSQL 15 clusters
# shaped like a hosted Supabase project, deployed with `supabase db push`.
#
# Three lanes run side by side on the machine's cores:
#   timing  the timing-sensitive tests (pytest -m serial), one at a time, on a
#           cluster and PgBouncer of their own, at normal priority;
#   tests   the independent tests (pytest -n 2), and
#   checks  pgTAP, linters, type checks and Deno, both at a lower priority
#           (nice), with their own cluster and PgBouncer started under it, so
#           that the work they give the servers yields the cores too. That
#           cluster lives in memory (/dev/shm when there is room): its
#           thousands of database clones and commits never queue the timing
#           lane's fsyncs behind their own on the disk.
# The timing lane mostly sleeps (its scenarios wait for scaled windows); when
# it wakes, it gets a core and the disk at once, as on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
py=.venv/bin/python
LOW="nice -n 5"
# Each pytest lane takes about 7 minutes; one still running after 30 is hung past its tests'
# own time limits (pyproject.toml): end it, so the run fails with its log instead of stalling.
BOUND="timeout --kill-after=30 1800"

scripts/install-deps.sh

workdir=$(mktemp -d /tmp/llm-limits-test.XXXXXX)
chmod 755 "$workdir"
memdir=$workdir
shm_free_kb=$(df --output=avail -k /dev/shm 2>/dev/null | tail -n +2 || true)
if [[ $shm_free_kb =~ ^[0-9]+$ ]] && ((shm_free_kb > 4 * 1024 * 1024)); then
    memdir=$(mktemp -d /dev/shm/llm-limits-test.XXXXXX)
    chmod 755 "$memdir"
fi
cleanup() {
    for root in "$memdir/tests" "$workdir/timing"; do
        $py -m llm_limits.testing.pooler down --dir "$root/pgbouncer" >/dev/null 2>&1 || true
        $py -m llm_limits.local.localstack destroy --dir "$root/pg" >/dev/null 2>&1 || true
    done
    rm -rf "$workdir" "$memdir"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

# watch NAME ADMIN_URL PID: a lane still running after 10 minutes (it takes about 7) is likely
# stuck; every 3 minutes from then, print to stderr what its cluster's sessions are doing and
# waiting for, so that a hung run's log says where it hangs.
watch() {
    local name=$1 url=$2 pid=$3 waited=0
    # Short sleeps: the watcher ends within seconds of its lane and never holds the log open.
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        kill -0 "$pid" 2>/dev/null || break
        waited=$((waited + 5))
        if ((waited >= 600 && waited % 180 == 0)); then
            echo "==> $name lane still running after $((waited / 60)) min; its sessions:" >&2
            psql -X -q "$url" -c "select pid, datname, state, wait_event_type, wait_event,
                now() - xact_start as in_xact, pg_blocking_pids(pid) as blocked_by,
                left(query, 100) as query from pg_stat_activity where state <> 'idle'
                and pid <> pg_backend_pid() and backend_type = 'client backend'
                order by xact_start" >&2 || true
        fi
    done
}

# stack ROOT [PREFIX...]: a PostgreSQL 15 cluster (pg_cron preloaded) and
# PgBouncer in transaction mode in front of it (pool of 8, like a small
# Supavisor), in ROOT, started under PREFIX; prints "ADMIN_URL POOLER_URL".
stack() {
    local root=$1
    shift
    mkdir -p "$root"
    chmod 755 "$root"
    local admin pooler
    admin=$("$@" $py -m llm_limits.local.localstack up --dir "$root/pg" \
        --set shared_preload_libraries=pg_cron --set cron.database_name=llm_limits_cron)
    pooler=$("$@" $py -m llm_limits.testing.pooler up --dir "$root/pgbouncer" \
        --upstream "$admin" --pool-size 8)
    echo "$admin $pooler"
}

# deploy ADMIN_URL: the migrations into llm_limits_template with supabase db push.
deploy() {
    local template_url="${1%/*}/llm_limits_template"
    psql -X -q -v ON_ERROR_STOP=1 "$1" -c "create database llm_limits_template"
    psql -X -q -v ON_ERROR_STOP=1 "$template_url" -f client/llm_limits/local/supabase_hosted.sql 2>/dev/null
    supabase db push --remote="$template_url" --yes 2>&1 | grep -v 'TLS\|^│$'
}

step "start the timing lane's throwaway PostgreSQL 15 cluster behind PgBouncer"
stacks=$(stack "$workdir/timing")
read -r timing_admin_url timing_pooler_url <<<"$stacks"
echo "timing: $timing_admin_url $timing_pooler_url"

# The timing lane deploys its own cluster and starts as soon as that is done.
timing_log="$workdir/timing.log"
(
    set -e
    step "deploy the migrations with supabase db push (timing cluster)"
    deploy "$timing_admin_url"
    export LLM_LIMITS_TEST_ADMIN_URL="$timing_admin_url" LLM_LIMITS_TEST_TEMPLATE=llm_limits_template \
        LLM_LIMITS_TEST_POOLER_URL="$timing_pooler_url"
    step "pytest, the timing-sensitive tests one at a time (own cluster, normal priority)"
    status=0
    $BOUND .venv/bin/pytest -p no:cacheprovider -m serial ${PYTEST_ARGS:-} || status=$?
    ((status == 5)) && status=0  # PYTEST_ARGS chose none of these
    exit $status
) >"$timing_log" 2>&1 &
timing=$!
watch timing "$timing_admin_url" "$timing" &
step "start the other lanes' cluster behind PgBouncer (nice 5, in $memdir)"
stacks=$(stack "$memdir/tests" $LOW)
read -r admin_url pooler_url <<<"$stacks"
echo "tests:  $admin_url $pooler_url"
base=${admin_url%/*}
template_url="$base/llm_limits_template"
step "deploy the migrations with supabase db push (tests cluster)"
deploy "$admin_url"
step "a second push is a no-op"
supabase db push --remote="$template_url" --yes 2>&1 | grep -q "Remote database is up to date"
echo "up to date"

step "supabase db advisors (Supabase's linter)"
supabase db advisors --remote="$template_url" --fail-on warn --yes 2>&1 | grep -v 'TLS\|^│$'

checks_log="$workdir/checks.log"
(
    set -e
    renice -n 5 -p "$BASHPID" >/dev/null
    step "pgTAP (pg_prove)"
    psql -X -q -v ON_ERROR_STOP=1 "$admin_url" -c "create database llm_limits_pgtap template llm_limits_template"
    pgtap_url="$base/llm_limits_pgtap"
    # Database-level settings (search_path with `extensions`) are not cloned.
    psql -X -q -v ON_ERROR_STOP=1 "$pgtap_url" -f client/llm_limits/local/supabase_hosted.sql 2>/dev/null
    psql -X -q -v ON_ERROR_STOP=1 "$pgtap_url" -c "create extension if not exists pgtap with schema extensions"
    pg_prove --dbname "$pgtap_url" --ext .sql -r supabase/tests

    step "sqlfluff lint"
    .venv/bin/sqlfluff lint supabase/migrations supabase/schemas supabase/tests

    step "ruff and mypy"
    .venv/bin/ruff check client tests bench examples
    .venv/bin/ruff format --check client tests bench examples
    .venv/bin/mypy

    step "Deno: the llm-gateway Edge Function (fmt, lint, check, test)"
    cd supabase/functions
    deno fmt --check
    deno lint
    deno check --frozen --config llm-gateway/deno.json llm-gateway/index.ts tests/
    # Loopback only: the protocol's test talks to a stub Google it starts itself.
    deno test --frozen --allow-net=127.0.0.1 --config llm-gateway/deno.json tests/
) >"$checks_log" 2>&1 &
checks=$!

export LLM_LIMITS_TEST_ADMIN_URL="$admin_url" LLM_LIMITS_TEST_TEMPLATE=llm_limits_template \
    LLM_LIMITS_TEST_POOLER_URL="$pooler_url"
step "pytest, the independent tests on both cores (nice 5)"
pytest_status=0
$LOW $BOUND .venv/bin/pytest -n 2 -m "not serial" ${PYTEST_ARGS:-} &
tests=$!
watch tests "$admin_url" "$tests" &
wait "$tests" || pytest_status=$?
((pytest_status == 5)) && pytest_status=0  # PYTEST_ARGS chose none of these

checks_status=0
wait "$checks" || checks_status=$?
cat "$checks_log"

timing_status=0
wait "$timing" || timing_status=$?
cat "$timing_log"

if ((pytest_status || checks_status || timing_status)); then
    step "FAILED: pytest $pytest_status, checks $checks_status, timing pytest $timing_status"
    exit 1
fi
step "all checks passed"
