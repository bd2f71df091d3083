# shellcheck shell=bash
# Sourced by tests/system/run.sh and tests/system/arm64.sh: a cached Debian root.
#
#   cached_root SUITE ARCH PACKAGES  ->  prints the path of a pristine root
#
# The root is built once with debootstrap (minbase) from the archive this
# machine's apt already uses, and kept under $KIOSK_SYSTEM_CACHE (default
# /var/cache/kiosk-test-system), OUTSIDE the clone, in a directory named after
# a hash of everything that went into it (suite, arch, packages, mirror).  A
# second run finds it there and only copies it.  Builds go to a temporary
# directory first and are renamed when complete, so an interrupted build is
# never mistaken for a cached one.

KIOSK_SYSTEM_CACHE=${KIOSK_SYSTEM_CACHE:-/var/cache/kiosk-test-system}

# The Debian archive URL from the machine's apt sources (deb822 or one-line),
# or $KIOSK_MIRROR; falls back to deb.debian.org.
debian_mirror() {
    if [[ -n ${KIOSK_MIRROR:-} ]]; then
        printf '%s\n' "$KIOSK_MIRROR"
        return
    fi
    local url
    url=$(
        {
            awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' \
                /etc/apt/sources.list.d/*.sources 2>/dev/null
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
        } | grep -v -e security -e '-updates' | grep '/debian/\?$' | head -n 1
    )
    printf '%s\n' "${url:-http://deb.debian.org/debian}"
}

cached_root() {
    local suite=$1 arch=$2 packages=$3
    local mirror key dir tmp
    mirror=$(debian_mirror)
    key=$(printf '%s\n' "minbase" "$suite" "$arch" "$packages" "$mirror" | sha256sum | cut -c1-16)
    dir=$KIOSK_SYSTEM_CACHE/$suite-$arch-$key
    if [[ -f $dir/.complete ]]; then
        echo "rootfs: reusing $dir" >&2
        printf '%s\n' "$dir/root"
        return
    fi
    mkdir -p "$KIOSK_SYSTEM_CACHE"
    tmp=$(mktemp -d "$KIOSK_SYSTEM_CACHE/.build-XXXXXX")
    echo "rootfs: building $suite/$arch minbase from $mirror into $dir (a few minutes, once)" >&2
    local foreign=()
    if [[ $arch != "$(dpkg --print-architecture)" ]]; then
        foreign=(--foreign)
    fi
    if ! debootstrap --variant=minbase --arch="$arch" "${foreign[@]}" --include="$packages" \
        "$suite" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
        tail -n 20 "$tmp/debootstrap.log" >&2
        rm -rf "$tmp"
        echo "rootfs: debootstrap failed (log above)" >&2
        return 1
    fi
    if [[ ${#foreign[@]} -gt 0 ]]; then
        if ! chroot "$tmp/root" /debootstrap/debootstrap --second-stage >>"$tmp/debootstrap.log" 2>&1; then
            tail -n 20 "$tmp/debootstrap.log" >&2
            rm -rf "$tmp"
            echo "rootfs: debootstrap --second-stage failed (log above)" >&2
            return 1
        fi
    fi
    printf '%s\n' "$packages" >"$tmp/packages"
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    printf '%s\n' "$dir/root"
}
