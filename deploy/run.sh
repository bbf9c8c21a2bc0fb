#!/usr/bin/env bash
# Runs the whole pipeline on this machine, in the foreground; Ctrl-C stops all of it.
#
#   bash deploy/run.sh                   live relay (wss://bsky.network); if it does not
#                                        answer within 5 s, the staging relay instead
#   bash deploy/run.sh --staging         the staging relay: the bundled real capture
#                                        (ingest/fixtures/jetstream-corpus), looped at live speed
#   bash deploy/run.sh --capture FILE    the staging relay replaying FILE, looped at live speed
#   bash deploy/run.sh --relay URL       this relay (ws:// or wss://), no probe
#
# What it starts, in order, and stops in reverse order on Ctrl-C (SIGINT), SIGTERM,
# SIGHUP, or when any of them dies:
#   1. nats-server (deploy/setup-nats.sh installs the pinned 2.14.6 if needed) with
#      deploy/nats-server.conf, store in $STATE/nats, passwords from deploy/secrets.sh;
#   2. the staging relay, when it is the upstream;
#   3. the ingestor, as user "ingest";
#   4. charts, feedgen and gateway, each as its own user, if its binary was built;
#   5. the archiver (consumers/archive), as user "archive", into the local directory
#      $STATE/archive.
# Then it prints where to look. Logs: $STATE/logs/<name>.log.
#
# Build once: `cargo build --release --workspace --bins`, then every binary runs from
# target/release. (`cargo run -p ingest` after a workspace build recompiles: a
# per-package build unifies dependency features differently, e.g. serde_json's
# raw_value, which only the consumers' kit enables, so everything above it is rebuilt.)
#
# Settings, from the environment:
#   BSKY_STACK_DIR     state (store, secrets, logs)            default .tools/stack
#   BSKY_BIN_DIR       use the binaries in this directory, do not build
#   BSKY_LIVE_RELAY    the relay tried first                   default wss://bsky.network
#   BSKY_PROBE_TIMEOUT seconds to wait for it                  default 5
#   BSKY_STACK_NATS_PORT 4222, BSKY_STACK_MONITOR_PORT 8222, BSKY_STACK_RELAY_PORT 2470,
#   BSKY_STACK_METRICS_PORT 9464 (ingest), BSKY_STACK_CHARTS_PORT 8080, BSKY_STACK_FEEDGEN_PORT 8081,
#   BSKY_STACK_GATEWAY_PORT 8082, BSKY_STACK_ARCHIVE_PORT 9470 (archiver /metrics);
#   each service's own BSKY_<SERVICE>_* settings pass through.
# The local stream keeps at most 2 GiB (BSKY_INGEST_STREAM__MAX_BYTES overrides).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf 'run: %s\n' "$*" >&2; }
die() {
    printf 'run: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

mode=probe
relay_url=""
capture="ingest/fixtures/jetstream-corpus/frames.bin.zst"
while (($#)); do
    case "$1" in
    --staging) mode=staging ;;
    --capture)
        [[ $# -ge 2 ]] || die "--capture needs a FILE"
        mode=staging
        capture=$2
        shift
        ;;
    --relay)
        [[ $# -ge 2 ]] || die "--relay needs a URL"
        mode=relay
        relay_url=$2
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
if [[ $mode == staging && ! -f $capture ]]; then
    die "capture file $capture not found"
fi
if [[ $mode == relay && ! $relay_url =~ ^wss?:// ]]; then
    die "--relay must be a ws:// or wss:// URL, got '$relay_url'"
fi

STATE=${BSKY_STACK_DIR:-$ROOT/.tools/stack}
NATS_PORT=${BSKY_STACK_NATS_PORT:-4222}
MONITOR_PORT=${BSKY_STACK_MONITOR_PORT:-8222}
RELAY_PORT=${BSKY_STACK_RELAY_PORT:-2470}
METRICS_PORT=${BSKY_STACK_METRICS_PORT:-9464}
LIVE_RELAY=${BSKY_LIVE_RELAY:-wss://bsky.network}
PROBE_TIMEOUT=${BSKY_PROBE_TIMEOUT:-5}

# The consumers: name, default port, the path a person opens. Each binary takes
# BSKY_<NAME>_NATS__URL / __USER / __PASSWORD_FILE like ingest, and its HTTP listen
# address as BSKY_<NAME>_HTTP__LISTEN; feedgen also its feeds, deploy/feedgen.toml.
CONSUMERS=(
    "charts 8080 /"
    "feedgen 8081 /xrpc/app.bsky.feed.getFeedSkeleton"
    "gateway 8082 /subscribe"
)

# --- processes we started: "name pid", in start order ---------------------------------
started=()

# True when something accepts TCP connections on 127.0.0.1:$1.
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The HTTP status code of GET $2 on 127.0.0.1:$1, or nothing.
http_status() {
    local line
    line=$({
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        timeout 2 head -n 1 <&3
    } 2>/dev/null) || return 1
    [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && printf '%s\n' "${BASH_REMATCH[1]}"
}

# Stops "name pid": SIGTERM, then SIGKILL after $3 seconds.
stop_one() {
    local name=$1 pid=$2 grace=$3 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) did not stop in ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Stops everything we started, newest first (nats-server last).
cleanup() {
    local status=${1:-$?} i entry
    trap - INT TERM HUP EXIT
    if ((${#started[@]})); then
        say "stopping ${#started[@]} process(es)"
    fi
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        entry=${started[i]}
        if [[ ${entry%% *} == nats-server ]]; then
            stop_one "${entry%% *}" "${entry##* }" 15
        else
            stop_one "${entry%% *}" "${entry##* }" 8
        fi
    done
    started=()
    exit "$status"
}
# A shell cannot trap a signal that was ignored when it started, as SIGINT is in a
# background job of a non-interactive shell (`nohup bash deploy/run.sh &` from a script):
# then Ctrl-C cannot reach this script. Say so, and how to stop it instead.
if [[ $(trap -p INT) == "trap -- '' SIGINT" ]]; then
    say "started with SIGINT ignored (a background job?): stop it with SIGTERM (kill $$), or start it as 'env --default-signal=INT bash deploy/run.sh'"
fi
trap 'cleanup 130' INT
trap 'cleanup 143' TERM
trap 'cleanup 129' HUP
trap 'cleanup' EXIT

# Starts "$@" in the background as service $name, output to its log. Job control is on
# for the fork only: the service gets a process group of its own, so a Ctrl-C reaches
# this script alone, and the services are stopped in order (the ingestor stores its
# cursor before nats-server goes); off again, so bash prints no job notices.
launch() {
    local name=$1
    shift
    set -m
    "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
    started+=("$name $!")
    set +m
}

# Waits until `$2...` succeeds, at most $1 seconds, while the last started process lives.
wait_for() {
    local seconds=$1 entry pid name i
    shift
    entry=${started[${#started[@]} - 1]}
    name=${entry%% *}
    pid=${entry##* }
    for ((i = 0; i < seconds * 10; i++)); do
        if "$@"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$STATE/logs/$name.log" >&2 || true
            die "$name exited during start; its log above ($STATE/logs/$name.log)"
        fi
        sleep 0.1
    done
    tail -n 20 "$STATE/logs/$name.log" >&2 || true
    die "$name (pid $pid) not ready after ${seconds}s; its log above ($STATE/logs/$name.log)"
}

# --- 1. binaries, built once ------------------------------------------------------------
if [[ -n ${BSKY_BIN_DIR:-} ]]; then
    BIN=$BSKY_BIN_DIR
else
    if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
    say "building once: cargo build --release --workspace --bins"
    cargo build --release --workspace --bins
    BIN=$ROOT/target/release
fi
[[ -x $BIN/ingest ]] || die "no ingest binary in $BIN"

server=$(bash deploy/setup-nats.sh) || die "deploy/setup-nats.sh failed"

mkdir -p "$STATE/logs" "$STATE/nats"
bash deploy/secrets.sh "$STATE/secrets"
SECRETS=$STATE/secrets

for port in "$NATS_PORT" "$MONITOR_PORT" "$METRICS_PORT"; do
    answers "$port" && die "port $port is in use (another nats-server or deploy/run.sh?); stop it, or choose other ports (BSKY_STACK_NATS_PORT, BSKY_STACK_MONITOR_PORT, BSKY_STACK_METRICS_PORT)"
done

# --- 2. nats-server ---------------------------------------------------------------------
say "starting nats-server on 127.0.0.1:$NATS_PORT (deploy/nats-server.conf, store $STATE/nats)"
# The passwords go into the server's environment (deploy/accounts.conf reads them), never
# onto its command line.
# shellcheck disable=SC2016 # expanded by the inner bash, on purpose
launch nats-server bash -c 'set -a; . "$1"; shift; exec "$@"' _ "$SECRETS/nats.env" \
    "$server" -c deploy/nats-server.conf -sd "$STATE/nats" -p "$NATS_PORT" -m "$MONITOR_PORT"
nats_healthy() { [[ $(http_status "$MONITOR_PORT" '/healthz?js-enabled-only=true') == 200 ]]; }
wait_for 20 nats_healthy
NATS_URL="nats://127.0.0.1:$NATS_PORT"

# --- 3. upstream ------------------------------------------------------------------------
staging=false
if [[ $mode == probe ]]; then
    [[ -x $BIN/staging ]] || die "no staging binary in $BIN (needed to probe the live relay)"
    say "probing $LIVE_RELAY (up to ${PROBE_TIMEOUT}s)"
    if reason=$("$BIN/staging" probe --url "$LIVE_RELAY" --timeout "$PROBE_TIMEOUT" 2>&1 >/dev/null); then
        relay_url=$LIVE_RELAY
    else
        reason=${reason%%$'\n'*}
        say "$LIVE_RELAY cannot be reached (${reason#Error: }): no internet here?"
        say "falling back to the STAGING relay: the bundled real capture, replayed in a loop at live speed; the charts page marks its data as staging"
        mode=staging
    fi
fi
if [[ $mode == staging ]]; then
    [[ -x $BIN/staging ]] || die "no staging binary in $BIN"
    answers "$RELAY_PORT" && die "port $RELAY_PORT is in use; choose another with BSKY_STACK_RELAY_PORT"
    say "starting the staging relay on 127.0.0.1:$RELAY_PORT: $capture, looped, speed 1"
    launch relay "$BIN/staging" replay "$capture" --listen "127.0.0.1:$RELAY_PORT" --loop --speed 1
    relay_up() { answers "$RELAY_PORT"; }
    wait_for 20 relay_up
    relay_url="ws://127.0.0.1:$RELAY_PORT"
    staging=true
fi

# --- 4. the ingestor --------------------------------------------------------------------
say "starting the ingestor: $relay_url -> $NATS_URL"
launch ingest env \
    BSKY_INGEST_RELAY__URL="$relay_url" \
    BSKY_INGEST_NATS__URL="$NATS_URL" \
    BSKY_INGEST_NATS__USER=ingest \
    BSKY_INGEST_NATS__INBOX_PREFIX=_INBOX_ingest \
    BSKY_INGEST_NATS__PASSWORD_FILE="$SECRETS/ingest.password" \
    BSKY_INGEST_METRICS__LISTEN="127.0.0.1:$METRICS_PORT" \
    BSKY_INGEST_STREAM__MAX_BYTES="${BSKY_INGEST_STREAM__MAX_BYTES:-2147483648}" \
    "$BIN/ingest"
metrics_up() { [[ $(http_status "$METRICS_PORT" /metrics) == 200 ]]; }
wait_for 30 metrics_up

# --- 5. the consumers, those that were built --------------------------------------------
shown=()
for entry in "${CONSUMERS[@]}"; do
    read -r name default_port path <<<"$entry"
    if [[ ! -x $BIN/$name ]]; then
        say "$name: not built ($BIN/$name missing); skipped"
        continue
    fi
    upper=${name^^}
    port_var="BSKY_STACK_${upper}_PORT"
    port=${!port_var:-$default_port}
    answers "$port" && die "port $port is in use; choose another with $port_var"
    extra=()
    if [[ $name == charts || $name == feedgen ]]; then
        extra+=("BSKY_${upper}_STATE__PATH=$STATE/$name.db") # its SQLite state
        # What the stream no longer holds, from the archiver's local directory (5b).
        if [[ -x $BIN/archive && -z ${BSKY_ARCHIVE_STORE__URL:-} ]]; then
            extra+=("BSKY_${upper}_ARCHIVE__URL=$STATE/archive")
        fi
    fi
    args=()
    if [[ $name == gateway ]]; then
        extra+=("BSKY_GATEWAY_STREAM__MIRROR__UPSTREAM=BSKY") # its own account (deploy/README.md)
        if [[ -x $BIN/archive && -z ${BSKY_ARCHIVE_STORE__URL:-} ]]; then
            extra+=("BSKY_GATEWAY_ARCHIVE__URL=$STATE/archive") # cursors older than the stream
        fi
    fi
    if [[ $name == charts && $staging == true ]]; then
        extra+=("BSKY_CHARTS_UPSTREAM__LABEL=staging")
    fi
    if [[ $name == feedgen ]]; then
        # Its feeds are in a file; its index goes with the rest of the state.
        args+=(--config "$ROOT/deploy/feedgen.toml")
    fi
    say "starting $name on 127.0.0.1:$port"
    launch "$name" env \
        "BSKY_${upper}_NATS__URL=$NATS_URL" \
        "BSKY_${upper}_NATS__USER=$name" \
        "BSKY_${upper}_NATS__INBOX_PREFIX=_INBOX_$name" \
        "BSKY_${upper}_NATS__PASSWORD_FILE=$SECRETS/$name.password" \
        "BSKY_${upper}_HTTP__LISTEN=127.0.0.1:$port" \
        "${extra[@]}" \
        "$BIN/$name" "${args[@]}"
    consumer_up() { [[ -n $(http_status "$port" "$path") ]]; }
    wait_for 30 consumer_up
    shown+=("$(printf '  %-9s http://127.0.0.1:%s%s' "$name" "$port" "$path")")
done

# --- 5b. the archiver, into a local directory --------------------------------------------
# As its own user `archive`, which alone may use the durable `archive` (accounts.conf).
if [[ -x $BIN/archive ]]; then
    archive_port=${BSKY_STACK_ARCHIVE_PORT:-9470}
    answers "$archive_port" && die "port $archive_port is in use; choose another with BSKY_STACK_ARCHIVE_PORT"
    say "starting the archiver into $STATE/archive"
    launch archive env \
        "BSKY_ARCHIVE_NATS__URL=$NATS_URL" \
        "BSKY_ARCHIVE_NATS__USER=archive" \
        "BSKY_ARCHIVE_NATS__INBOX_PREFIX=_INBOX_archive" \
        "BSKY_ARCHIVE_NATS__PASSWORD_FILE=$SECRETS/archive.password" \
        "BSKY_ARCHIVE_STORE__URL=${BSKY_ARCHIVE_STORE__URL:-$STATE/archive}" \
        "BSKY_ARCHIVE_HTTP__LISTEN=127.0.0.1:$archive_port" \
        "$BIN/archive"
    archive_up() { [[ $(http_status "$archive_port" /metrics) == 200 ]]; }
    wait_for 30 archive_up
    shown+=("$(printf '  %-9s %s  (metrics http://127.0.0.1:%s/metrics)' archive "${BSKY_ARCHIVE_STORE__URL:-$STATE/archive}" "$archive_port")")
else
    say "archive: not built ($BIN/archive missing); skipped"
fi

# --- 6. where to look -------------------------------------------------------------------
upstream="$relay_url"
$staging && upstream="$relay_url  (STAGING: $capture, looped at live speed)"
{
    echo
    echo "run: ready. Ctrl-C stops everything."
    printf '  %-9s %s\n' upstream "$upstream"
    printf '  %-9s %s   (monitoring http://127.0.0.1:%s)\n' nats "$NATS_URL" "$MONITOR_PORT"
    printf '  %-9s http://127.0.0.1:%s/metrics\n' metrics "$METRICS_PORT"
    for line in "${shown[@]}"; do echo "$line"; done
    printf '  %-9s %s/\n' logs "$STATE/logs"
    echo "  nats CLI: NATS_URL=$NATS_URL NATS_USER=operator NATS_PASSWORD=\$(cat $SECRETS/operator.password) nats --inbox-prefix _INBOX_operator stream info BSKY"
    echo
} >&2

# --- 7. until Ctrl-C, or until one of them dies -----------------------------------------
while true; do
    wait -n || true
    for entry in "${started[@]}"; do
        if ! kill -0 "${entry##* }" 2>/dev/null; then
            name=${entry%% *}
            tail -n 20 "$STATE/logs/$name.log" >&2 || true
            say "$name exited; its log above ($STATE/logs/$name.log). Stopping the rest."
            cleanup 1
        fi
    done
done
