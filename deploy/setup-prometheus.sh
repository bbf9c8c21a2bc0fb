#!/usr/bin/env bash
# Installs Debian's prometheus package for `promtool`, which tests the alert rules
# (deploy/monitoring/alerts.test.yml). Idempotent: does nothing when promtool is on PATH.
# Where it cannot install (not root, no apt-get): under CI=true it fails, elsewhere it
# exits 0 and says why, and the rules test skips saying the same.
set -euo pipefail

command -v promtool >/dev/null && exit 0
why=""
if [[ $(id -u) -ne 0 ]]; then
    why="not root (run: apt-get install -y prometheus)"
elif ! command -v apt-get >/dev/null; then
    why="no apt-get on this machine (install Prometheus' promtool)"
else
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends prometheus >&2; then
        command -v promtool >/dev/null && exit 0
    fi
    why="apt-get install prometheus failed"
fi
if [[ ${CI:-} == true ]]; then
    echo "setup-prometheus: error: promtool is missing: $why" >&2
    exit 1
fi
echo "setup-prometheus: promtool is missing ($why); the alert rules test will skip" >&2
