#!/usr/bin/env bash
# `make test`: everything CI checks, on a throwaway PostgreSQL 15 cluster
# shaped like a hosted Supabase project, deployed with `supabase db push`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
py=.venv/bin/python

scripts/install-deps.sh

workdir=$(mktemp -d /tmp/llm-limits-test.XXXXXX)
chmod 755 "$workdir"
cleanup() {
    $py -m llm_limits.testing.pooler down --dir "$workdir/pgbouncer" >/dev/null 2>&1 || true
    $py -m llm_limits.local.localstack destroy --dir "$workdir/pg" >/dev/null 2>&1 || true
    rm -rf "$workdir"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

step "start a throwaway PostgreSQL 15 cluster (pg_cron preloaded)"
admin_url=$($py -m llm_limits.local.localstack up --dir "$workdir/pg" \
    --set shared_preload_libraries=pg_cron --set cron.database_name=llm_limits_cron)
echo "$admin_url"
base=${admin_url%/*}

step "start PgBouncer in transaction mode in front of it (pool of 8, like a small Supavisor)"
pooler_url=$($py -m llm_limits.testing.pooler up --dir "$workdir/pgbouncer" --upstream "$admin_url" \
    --pool-size 8)
echo "$pooler_url"

step "deploy the migrations with supabase db push"
psql -X -q -v ON_ERROR_STOP=1 "$admin_url" -c "create database llm_limits_template"
template_url="$base/llm_limits_template"
psql -X -q -v ON_ERROR_STOP=1 "$template_url" -f client/llm_limits/local/supabase_hosted.sql 2>/dev/null
supabase db push --remote="$template_url" --yes 2>&1 | grep -v 'TLS\|^│$'
step "a second push is a no-op"
supabase db push --remote="$template_url" --yes 2>&1 | grep -q "Remote database is up to date"
echo "up to date"

step "supabase db advisors (Supabase's linter)"
supabase db advisors --remote="$template_url" --fail-on warn --yes 2>&1 | grep -v 'TLS\|^│$'

# The checks below and the parallel part of pytest are independent: they run side by side.
checks_log="$workdir/checks.log"
(
    set -e
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
step "pytest, the independent tests on both cores"
pytest_status=0
.venv/bin/pytest -n 2 -m "not serial" ${PYTEST_ARGS:-} || pytest_status=$?
((pytest_status == 5)) && pytest_status=0  # PYTEST_ARGS chose none of these

checks_status=0
wait "$checks" || checks_status=$?
cat "$checks_log"

step "pytest, the timing-sensitive tests one at a time"
serial_status=0
.venv/bin/pytest -m serial ${PYTEST_ARGS:-} || serial_status=$?
((serial_status == 5)) && serial_status=0

if ((pytest_status || checks_status || serial_status)); then
    step "FAILED: pytest $pytest_status, checks $checks_status, serial pytest $serial_status"
    exit 1
fi
step "all checks passed"
