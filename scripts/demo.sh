#!/usr/bin/env bash
# `make demo`: from a fresh clone on a bare machine, start an embedded PostgreSQL 15 shaped
# like a Supabase project, deploy the migrations with `supabase db push`, register demo keys
# in two Cloud projects, and drive gemma-3-27b with concurrent callers through the real client
# against a local fake Gemini that enforces Google's limits: first short prompts (RPM-bound),
# then long Russian pages (TPM-bound, counted with Gemma 3's vocabulary by the fake and
# exactly by the client). Fails if a single 429 reached it.
#
#   scripts/demo.sh          run the demo (DEMO_DURATION seconds, default 150)
#   scripts/demo.sh down     stop the local database it started (`make demo-down`)
#
# DEMO_DURATION, DEMO_WORKERS and DEMO_LATENCY (fake seconds per call) tune the RPM-bound run,
# DEMO_TPM_DURATION (default 90) the TPM-bound one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
py=.venv/bin/python
stack_dir=.llm-limits/pg
chart=.llm-limits/demo-chart.png
report=.llm-limits/demo-report.txt
tpm_chart=.llm-limits/demo-tpm-chart.png
tpm_report=.llm-limits/demo-tpm-report.txt

cli() { "$py" -m llm_limits.cli "$@"; }
step() { printf '\n==> %s\n' "$*"; }

if [[ ${1:-} == down ]]; then
    if [[ -x $py ]]; then
        cli local down --dir "$stack_dir"
    fi
    exit 0
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/demo.sh [down]" >&2
    exit 2
fi

duration=${DEMO_DURATION:-150}
workers=${DEMO_WORKERS:-8}
latency=${DEMO_LATENCY:-0.3}
tpm_duration=${DEMO_TPM_DURATION:-90}

step "install dependencies (apt, npm ci, .venv)"
scripts/install-deps.sh

step "start the embedded PostgreSQL 15 in $stack_dir and push the migrations"
url=$(cli local up --dir "$stack_dir")
# Only the local demo database, whatever the shell points at: demo keys must never land in a
# real project, and the demo must hold only its own fake keys.
export LLM_LIMITS_DB_URL=$url
unset SUPABASE_DB_URL DATABASE_URL GOOGLE_API_KEY GOOGLE_API_LOCALNAME GOOGLE_GEMINI_BASE_URL
echo "$url"

step "register demo keys: two in demo-project-a, one in demo-project-b"
# Fake values: the fake Gemini accepts exactly these, grouped into the same two projects.
export DEMO_KEY_A1=demo-fake-key-a1 DEMO_KEY_A2=demo-fake-key-a2 DEMO_KEY_B1=demo-fake-key-b1
cli keys add demo-a1 --env-var DEMO_KEY_A1 --group demo-project-a --notes "make demo" --exist-ok
cli keys add demo-a2 --env-var DEMO_KEY_A2 --group demo-project-a --notes "make demo" --exist-ok
cli keys add demo-b1 --env-var DEMO_KEY_B1 --group demo-project-b --notes "make demo" --exist-ok
# Google's published free-tier numbers (the fake enforces what the database says).
cli models set gemma-3-27b --rpm 30 --tpm 15000 --rpd 14400
cli keys list

step "gateway: a notebook with a caller token, through the llm-gateway Edge Function (Deno)"
gateway_leg() {
    local fake_port gw_port token name pids=()
    fake_port=$("$py" -c 'from llm_limits.cli.gateway import free_port; print(free_port())')
    gw_port=$("$py" -c 'from llm_limits.cli.gateway import free_port; print(free_port())')
    "$py" -m llm_limits.local.fake_gemini --port "$fake_port" \
        --project-env demo-project-a=DEMO_KEY_A1,DEMO_KEY_A2 \
        --project-env demo-project-b=DEMO_KEY_B1 >/dev/null 2>&1 &
    pids+=($!)
    name=demo-notebook-$(date +%s)
    token=$(cli callers add "$name" --models gemma-3-27b --notes "make demo")
    # Not through cli(): a background function is a subshell, and $! must be Deno itself.
    "$py" -m llm_limits.cli gateway serve --port "$gw_port" \
        --google-base-url "http://127.0.0.1:$fake_port" >.llm-limits/demo-gateway.log 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null && break
        sleep 0.1
    done
    LLM_GATEWAY_URL=http://127.0.0.1:$gw_port LLM_GATEWAY_TOKEN=$token \
        "$py" examples/kaggle_gateway_notebook.py "Привет! Что такое белые ночи?" \
        "What is a token bucket?"
    cli callers revoke "$name"
    echo "after revoke:"
    LLM_GATEWAY_URL=http://127.0.0.1:$gw_port LLM_GATEWAY_TOKEN=$token \
        "$py" examples/kaggle_gateway_notebook.py "Still there?" 2>&1 | head -1 || true
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    cli callers list
    if grep -q -e demo-fake-key -e "$token" .llm-limits/demo-gateway.log; then
        echo "FAILED: a key or token reached the gateway's log" >&2
        return 1
    fi
}
gateway_status=0
gateway_leg || gateway_status=$?

step "simulate: $workers callers for ${duration}s on gemma-3-27b (2 projects x 30 RPM)"
mkdir -p "$(dirname "$report")"
status=0
cli simulate --model gemma-3-27b --workers "$workers" --duration "$duration" \
    --latency "$latency" --chart "$chart" >"$report" || status=$?

step "let the RPM-bound run's grants age out of the 60 s window"
sleep 61

step "simulate, TPM-bound: 4 callers for ${tpm_duration}s of Russian pages (8,000-30,000 characters)"
tpm_status=0
# Its chart draws input tokens per rolling window against TPM (the RPM leg's: grants vs RPM).
cli simulate --model gemma-3-27b --workers 4 --duration "$tpm_duration" \
    --latency "$latency" --prompt-chars 8000-30000 --language ru --chart "$tpm_chart" \
    --chart-of tokens >"$tpm_report" || tpm_status=$?
((status != 0)) || status=$tpm_status

step "status"
cli status

step "the last grants, settlements and 429s in the audit log"
cli audit --since 10m --limit 8 --event granted --event committed --event rate_limited

step "report: RPM-bound (short prompts)"
cat "$report"
step "report: TPM-bound (long Russian pages)"
cat "$tpm_report"
if ((gateway_status != 0)); then
    echo "FAILED: the gateway leg" >&2
    status=4
elif ((status == 1)); then
    echo "FAILED: the fake Gemini answered 429; the controller let too much through" >&2
elif ((status != 0)); then
    echo "FAILED: simulate exited with $status" >&2
else
    echo "demo passed: no 429 reached the fake Gemini. Stop the database with: make demo-down"
fi
exit "$status"
