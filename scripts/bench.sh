#!/usr/bin/env bash
# `make bench`: measure llm-limits next to a pgbench baseline on one
# throwaway cluster, and write the figures into BENCHMARKS.md.
# BENCH_ARGS passes options to bench/run.py (e.g. "--seconds 10 --big-rows 100000").
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
py=.venv/bin/python

scripts/install-deps.sh

workdir=$(mktemp -d /tmp/llm-limits-bench.XXXXXX)
chmod 755 "$workdir"
trap '$py -m llm_limits.local.localstack destroy --dir "$workdir/pg" >/dev/null 2>&1 || true; rm -rf "$workdir"' EXIT

admin_url=$($py -m llm_limits.local.localstack up --dir "$workdir/pg")
$py -m bench.run --admin-url "$admin_url" ${BENCH_ARGS:-}
