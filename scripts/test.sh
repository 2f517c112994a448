#!/usr/bin/env bash
# The whole test suite, from a fresh machine: provision the CPython interpreters, the Python
# packages, the browser, the Go toolchain and tmux the tests run against (cached outside the clone), then check
# formatting and lints, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/provision-pythons.sh >/dev/null
scripts/provision-venvs.sh
# Debian's Chromium, for the HTML report's tests (tests/html_report.rs); its last line is the path.
MEMSPY_CHROMIUM=$(scripts/provision-chromium.sh | tail -n 1)
export MEMSPY_CHROMIUM
# Debian's Go, for `go tool pprof`, the reference reader of the pprof export (tests/pprof.rs).
MEMSPY_GO=$(scripts/provision-go.sh | tail -n 1)
export MEMSPY_GO
# tmux, for the full-screen `memspy top` tests (tests/top.rs).
MEMSPY_TMUX=$(scripts/provision-tmux.sh | tail -n 1)
export MEMSPY_TMUX

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --locked --no-fail-fast "$@"
else
    cargo test --locked --no-fail-fast "$@"
fi
