#!/usr/bin/env bash
# The one test command. Installs what the SDK suites need when it is missing or stale (a Python
# venv in .venv, the TypeScript SDK in tests/sdk/ts/node_modules), then runs the whole Rust
# suite, which also drives the official SDK suites against an in-process gateway.
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

# TypeScript: npm ci (exactly package-lock.json) only when node_modules is missing or stale.
ts=tests/sdk/ts
ts_stamp=$ts/node_modules/.package-lock.sha256
if [[ "$(cat "$ts_stamp" 2>/dev/null)" != "$(digest "$ts/package-lock.json")" ]]; then
    step "npm ci in $ts"
    (cd "$ts" && npm ci --no-audit --no-fund)
    digest "$ts/package-lock.json" >"$ts_stamp"
else
    echo "TypeScript SDK suite: node_modules is up to date"
fi

# Rust: every test, including tests/it/sdk.rs, which runs both SDK suites.
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
