#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests that start the real gateway binary
# against real peers on loopback. Installs the Debian packages the tests need when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# The end-to-end tests run the real binaries; build them first so they are current.
cargo build --workspace --bins
cargo test --workspace "$@"
