#!/usr/bin/env bash
# Installs the real Jetstream client libraries the gateway's tests drive
# (@skyware/jetstream, @atcute/jetstream and the `ws` package, pinned in
# consumers/gateway/tests/js/package-lock.json) into that folder's git-ignored
# node_modules, from the npm registry.
#
#   bash deploy/setup-node-clients.sh
#
# Idempotent: nothing is done when node_modules was installed from the same lock
# file. Without node or npm it prints why and exits 0 when CI is unset (the tests
# then say they skip), and fails under CI=true, where the tests must run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/consumers/gateway/tests/js"
STAMP="$DIR/node_modules/.installed-from-lock"

say() { printf 'setup-node-clients: %s\n' "$*" >&2; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [[ "${CI:-}" == "true" ]]; then
        say "error: node and npm are required under CI (install Node.js 20 or later)"
        exit 1
    fi
    say "node or npm not found: the gateway's client-library tests will skip"
    exit 0
fi

want=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    say "up to date ($(node --version))"
    exit 0
fi
say "npm ci in $DIR"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
echo "$want" >"$STAMP"
say "installed"
