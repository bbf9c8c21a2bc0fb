#!/usr/bin/env bash
# Installs Debian's chromium for the charts page test (consumers/charts/tests/browser.rs),
# which drives it headless. Idempotent: does nothing when /usr/bin/chromium exists.
# Needs root (apt-get); prints why and exits non-zero if it cannot install.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup-chromium: /usr/bin/chromium is missing; run as root: apt-get install -y chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >&2
