#!/usr/bin/env bash
# The one test command. Installs what the client suites need when it is missing or stale (a
# Python venv in .venv, the TypeScript SDK in tests/sdk/ts/node_modules, the Vercel AI SDK in
# tests/sdk/ai/node_modules), then runs the whole Rust suite, which also drives the three client
# suites against an in-process gateway.
# Needs: a Rust toolchain, python3 (with venv), node and npm. cargo-nextest is used when present.
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A file's content hash, for the "installed from this exact file" stamps.
digest() { sha256sum "$1" | cut -d' ' -f1; }

# Python: the venv is rebuilt only when requirements.txt changed since the last install.
requirements=tests/sdk/python/requirements.txt
py_stamp=.venv/.requirements.sha256
if [[ ! -x .venv/bin/python ]]; then
    step "creating .venv (python3 -m venv)"
    rm -rf .venv
    python3 -m venv .venv
fi
if [[ "$(cat "$py_stamp" 2>/dev/null)" != "$(digest "$requirements")" ]]; then
    step "installing $requirements into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
    digest "$requirements" >"$py_stamp"
else
    echo "Python SDK suite: .venv is up to date"
fi

# TypeScript and the Vercel AI SDK: npm ci (exactly package-lock.json) only when node_modules is
# missing or stale.
for js in tests/sdk/ts tests/sdk/ai; do
    js_stamp=$js/node_modules/.package-lock.sha256
    if [[ "$(cat "$js_stamp" 2>/dev/null)" != "$(digest "$js/package-lock.json")" ]]; then
        step "npm ci in $js"
        (cd "$js" && npm ci --no-audit --no-fund)
        digest "$js/package-lock.json" >"$js_stamp"
    else
        echo "$js: node_modules is up to date"
    fi
done

# Rust: every test, including tests/it/sdk.rs, which runs the three client suites.
if cargo nextest --version >/dev/null 2>&1; then
    step "cargo nextest run --locked --no-fail-fast"
    cargo nextest run --locked --no-fail-fast
    # nextest does not run doctests; run them when the crate has any.
    if grep -rqF '```' src; then
        step "cargo test --doc --locked"
        cargo test --doc --locked
    fi
else
    step "cargo test --locked --no-fail-fast (cargo-nextest not found; doctests included)"
    cargo test --locked --no-fail-fast
fi

# The fault-injection matrix must pass deterministically: two more runs, so a flake shows.
for run in 2 3; do
    step "resilience matrix, run $run of 3"
    cargo test --locked --test it resilience:: -- --quiet
done

step "all tests passed"
