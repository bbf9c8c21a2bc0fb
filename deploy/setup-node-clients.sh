#!/usr/bin/env bash
# Installs what the gateway's tests use beside Rust:
# 1. the real Jetstream client libraries (@skyware/jetstream, @atcute/jetstream and
#    the `ws` package, pinned in consumers/gateway/tests/js/package-lock.json) into
#    that folder's git-ignored node_modules, from the npm registry;
# 2. the `zstd` command-line tool (Debian package `zstd`), the independent decoder
#    that checks the gateway's zstd frames against Jetstream's dictionary.
#
#   bash deploy/setup-node-clients.sh
#
# Idempotent: nothing is done when node_modules was installed from the same lock
# file and zstd is on PATH. Without node, npm or zstd it prints why and exits 0 when
# CI is unset (the tests then say they skip), and fails under CI=true, where the
# tests must run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/consumers/gateway/tests/js"
STAMP="$DIR/node_modules/.installed-from-lock"

say() { printf 'setup-node-clients: %s\n' "$*" >&2; }

if ! command -v zstd >/dev/null; then
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo -n)
    if command -v apt-get >/dev/null; then
        say "installing the zstd tool (apt-get install zstd)"
        "${sudo[@]}" apt-get update -qq >&2 || true
        "${sudo[@]}" apt-get install -y -qq zstd >&2 || true
    fi
    if ! command -v zstd >/dev/null; then
        if [[ "${CI:-}" == "true" ]]; then
            say "error: the zstd tool is required under CI (apt-get install zstd)"
            exit 1
        fi
        say "zstd not found: the gateway's zstd test will skip"
    fi
fi

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
