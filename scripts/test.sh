#!/usr/bin/env bash
# The whole test suite, from a fresh machine: provision the CPython interpreters and the Python
# packages the tests run against (cached outside the clone), then check formatting and lints,
# then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/provision-pythons.sh >/dev/null
scripts/provision-venvs.sh

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "$@"
else
    cargo test --locked --no-fail-fast "$@"
fi
