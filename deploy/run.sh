#!/usr/bin/env bash
# Runs the ingestor against a local JetStream.
#
#   bash deploy/run.sh [ingest flags...]     e.g. --relay wss://bsky.network --nats nats://127.0.0.1:4222
#
# 1. deploy/setup-nats.sh makes a nats-server >= 2.10 available;
# 2. unless something already answers on 127.0.0.1:4222, starts it in the
#    background with deploy/nats-server.conf, store in .tools/data, log in
#    .tools/nats-server.log; it keeps running after the ingestor exits
#    (stop it with: kill "$(cat .tools/nats-server.pid)");
# 3. cargo run --release -p ingest -- "$@".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf 'run: %s\n' "$*" >&2; }
die() {
    printf 'run: error: %s\n' "$*" >&2
    exit 1
}

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

# True when a TCP connection to 127.0.0.1:$1 succeeds.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True when /healthz?js-enabled-only=true on 127.0.0.1:$1 answers 200.
js_healthy() {
    local status
    status=$(
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        timeout 2 head -n 1 <&3
    ) 2>/dev/null || return 1
    [[ $status == HTTP/1.?\ 200* ]]
}

server=$(bash deploy/setup-nats.sh) || die "deploy/setup-nats.sh failed"

if answers 4222; then
    say "a server already answers on 127.0.0.1:4222; using it"
else
    mkdir -p .tools/data
    say "starting $server with deploy/nats-server.conf (store .tools/data, log .tools/nats-server.log)"
    # Its own session, so Ctrl-C on the ingestor does not reach the server.
    detach="nohup"
    command -v setsid >/dev/null && detach=setsid
    "$detach" "$server" -c deploy/nats-server.conf -sd "$ROOT/.tools/data" \
        </dev/null >>.tools/nats-server.log 2>&1 &
    pid=$!
    echo "$pid" >.tools/nats-server.pid
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 .tools/nats-server.log >&2 || true
            die "nats-server exited during start; log above (.tools/nats-server.log)"
        fi
        if answers 4222 && js_healthy 8222; then
            break
        fi
        sleep 0.1
    done
    if ! answers 4222 || ! js_healthy 8222; then
        die "nats-server (pid $pid) not ready on 127.0.0.1:4222 after 10 s; see .tools/nats-server.log"
    fi
    say "nats-server ready on nats://127.0.0.1:4222 (monitoring http://127.0.0.1:8222, pid $pid)"
    say "it keeps running after the ingestor exits; stop it with: kill \"\$(cat .tools/nats-server.pid)\""
fi

exec cargo run --release -p ingest -- "$@"
