#!/usr/bin/env bash
# make test-arm64: the test suite (minus the slow mark) on arm64, the Pi's
# architecture, in a Debian Bookworm arm64 root run through qemu-user-static.
#
#   tests/system/arm64.sh [PYTEST ARGS...]     (default: -m "not slow" -q)
#
# The root is built once with debootstrap --foreign and cached outside the clone
# (tests/system/rootfs.sh); the venv with the test dependencies is made inside it
# once per pyproject.toml (pip needs PyPI the first time).  Each run copies the
# working tree into the root and runs pytest there with systemd-nspawn.
# Needs root; installs qemu-user-static, binfmt-support, debootstrap and
# systemd-container with apt when they are missing.  Not part of .ci/run (it
# takes longer than CI's bound): run it for each release and record the result
# in the README ("Tested on").
# shellcheck disable=SC2016,SC2317
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/system/rootfs.sh disable=SC1091
source "$REPO/tests/system/rootfs.sh"

if [[ $EUID -ne 0 ]]; then
    echo "test-arm64: SKIPPED: needs root (debootstrap, binfmt, systemd-nspawn)" >&2
    exit 0
fi
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
[[ -e /usr/bin/qemu-aarch64-static ]] || need+=(qemu-user-static binfmt-support)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "test-arm64: installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || {
    echo "test-arm64: FAILED: qemu-aarch64 is not registered with binfmt_misc" >&2
    exit 1
}

T0=$SECONDS
PACKAGES=python3,python3-venv,ca-certificates,git,procps,util-linux
PRISTINE=$(cached_root bookworm arm64 "$PACKAGES")
echo "test-arm64: root ready after $((SECONDS - T0)) s"
CACHE=$(dirname "$PRISTINE")
KEY=$(sha256sum "$REPO/pyproject.toml" | cut -c1-12)
WORK=$(mktemp -d /var/tmp/kiosk-arm64.XXXXXX)
ROOT64=$WORK/root
mkdir -p "$ROOT64" "$WORK/upper" "$WORK/ovl"
cleanup() {
    umount "$ROOT64" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# Changes go to an overlay on the cached root, which stays pristine.
mount -t overlay kiosk-arm64 -o "lowerdir=$PRISTINE,upperdir=$WORK/upper,workdir=$WORK/ovl" "$ROOT64"

# The venv lives in the cache, keyed by pyproject.toml; the root stays pristine.
if [[ ! -f $CACHE/venv-$KEY/.complete ]]; then
    echo "test-arm64: making the arm64 venv with the test dependencies (once per pyproject.toml)"
    rm -rf "$CACHE/venv-$KEY"
    mkdir -p "$CACHE/venv-$KEY"
    cp "$REPO/pyproject.toml" "$WORK/pyproject.toml"
    # HTTPS here may pass an intercepting proxy: the root trusts the host's extra CAs.
    mkdir -p "$WORK/ca"
    cp /usr/local/share/ca-certificates/*.crt "$WORK/ca/" 2>/dev/null || true
    systemd-nspawn --quiet --register=no --keep-unit -M "kiosk-arm64-$$" -D "$ROOT64" \
        --bind="$CACHE/venv-$KEY:/venv" --bind-ro="$WORK/ca:/usr/local/share/ca-certificates" \
        --bind-ro="$WORK/pyproject.toml:/tmp/pyproject.toml" /bin/sh -c '
        set -e
        update-ca-certificates >/dev/null 2>&1
        python3 -m venv /venv
        /venv/bin/pip install -q --disable-pip-version-check --upgrade pip
        /venv/bin/python - <<EOF >/tmp/req.txt
import tomllib
p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["test"]))
EOF
        /venv/bin/pip install -q --disable-pip-version-check -r /tmp/req.txt'
    touch "$CACHE/venv-$KEY/.complete"
fi
echo "test-arm64: venv ready after $((SECONDS - T0)) s"

# This working tree (tracked and new files), copied so the run writes nothing here.
mkdir "$WORK/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$REPO" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$WORK/src" -xf -
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-m "not slow" -q -p no:cacheprovider)
T1=$SECONDS
rc=0
# (On a host whose /run is not a tmpfs, nspawn ends with a harmless "Attempted to
# remove disk file system under /run/systemd/nspawn/propagate/…".)
systemd-nspawn --quiet --register=no --keep-unit -M "kiosk-arm64-$$" -D "$ROOT64" --console=pipe \
    --bind="$CACHE/venv-$KEY:/venv" --bind="$WORK/src:/src" --chdir=/src \
    --setenv=PYTHONPATH=/src --setenv=LC_ALL=C.UTF-8 \
    /bin/sh -c 'uname -m; /venv/bin/python --version; exec /venv/bin/python -m pytest "$@"' sh "${args[@]}" \
    || rc=$?
echo "test-arm64: pytest took $((SECONDS - T1)) s under qemu (exit $rc); total $((SECONDS - T0)) s"
exit "$rc"
