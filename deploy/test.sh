#!/usr/bin/env bash
# Runs every test of the workspace against real nats-servers.
#
#   bash deploy/test.sh [extra cargo test args...]
#
# 1. deploy/setup-nats.sh --with-legacy: a nats-server >= 2.10 (exported as
#    NATS_SERVER_BIN) and Debian's 2.9 in .tools/legacy/ for the refusal tests;
# 2. cargo test --workspace --all-targets, then the doc tests (--all-targets
#    leaves them out). Each test starts its own servers through the testkit crate.
# Exits non-zero if set-up or any test fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || {
    echo "test: error: cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
}

NATS_SERVER_BIN=$(bash deploy/setup-nats.sh --with-legacy)
export NATS_SERVER_BIN
bash deploy/setup-node-clients.sh

cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
