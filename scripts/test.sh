#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests that start the real gateway binary
# against real peers on loopback. Installs the Debian packages the tests need when missing.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p postern-tests --test crash`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# The end-to-end tests run the real binaries; build them first so they are current.
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
