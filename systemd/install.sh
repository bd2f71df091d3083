#!/usr/bin/env bash
# Install or upgrade the kiosk visitor counter as a systemd service on
# Raspberry Pi OS or plain Debian (Bookworm or Trixie).  Safe to run again:
# every step checks what is already there, a second run changes nothing, and an
# existing configuration is never overwritten.
#
#   sudo ./systemd/install.sh                         # install or upgrade, then (re)start
#   sudo ./systemd/install.sh --wheelhouse DIR        # the same with no network (make wheelhouse)
#   ./systemd/install.sh --dry-run                    # only say what would be done
#
# The clone is never written to: the package is built from a temporary copy.
# See docs/install.md for what each step is for.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install.sh [OPTIONS]

Install or upgrade the kiosk service from the source tree this script lives in.

Options:
  --wheelhouse DIR  install Python packages only from the wheels in DIR, with no
                    network (make one with "make wheelhouse"; apt is not used
                    unless a package is missing)
  --no-apt          do not apt-get install python3-venv / python3-lgpio
  --no-start        do not run systemctl daemon-reload / enable / (re)start
  --with-web        also install the staff dashboard (kiosk-web.service, user
                    kiosk-web in group kiosk); see "The dashboard" in the README
  --dry-run         print what would be done instead of doing it (no root needed)
  --prefix DIR      install the venv under DIR/venv        (default: /opt/kiosk)
  --etc DIR         configuration directory                (default: /etc/kiosk)
  --root DIR        stage everything below DIR (like DESTDIR, also read from
                    $DESTDIR); skips accounts, ownership and systemctl
  -h, --help        show this help

Environment:
  PYTHON            interpreter used to create the venv    (default: python3)
  DESTDIR           same as --root
EOF
}

PREFIX=/opt/kiosk
ETC=/etc/kiosk
ROOT=${DESTDIR:-}
WHEELHOUSE=
DO_APT=1
DO_START=1
DRY_RUN=0
WITH_WEB=0
PYTHON=${PYTHON:-python3}

SERVICE_USER=kiosk
STATE_DIR=/var/lib/kiosk
UNIT_NAME=kiosk.service
WEB_USER=kiosk-web
WEB_UNIT_NAME=kiosk-web.service
UNIT_DIR=/etc/systemd/system
GPIO_RULE=/etc/udev/rules.d/60-kiosk-gpiochip.rules

say() { printf 'kiosk-install: %s\n' "$*"; }
warn() { printf 'kiosk-install: warning: %s\n' "$*"; }
die() { printf 'kiosk-install: error: %s\n' "$*" >&2; exit 1; }

ORIG_ARGS=$*
while [[ $# -gt 0 ]]; do
    case $1 in
        --wheelhouse) [[ $# -ge 2 ]] || die "--wheelhouse needs a directory"; WHEELHOUSE=$2; shift ;;
        --wheelhouse=*) WHEELHOUSE=${1#*=} ;;
        --no-apt) DO_APT=0 ;;
        --no-start) DO_START=0 ;;
        --dry-run) DRY_RUN=1 ;;
        --with-web) WITH_WEB=1 ;;
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; PREFIX=$2; shift ;;
        --prefix=*) PREFIX=${1#*=} ;;
        --etc) [[ $# -ge 2 ]] || die "--etc needs a directory"; ETC=$2; shift ;;
        --etc=*) ETC=${1#*=} ;;
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; ROOT=$2; shift ;;
        --root=*) ROOT=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

if [[ $DRY_RUN -eq 0 && -z $ROOT && $EUID -ne 0 ]]; then
    die "must be run as root (try: sudo $0 $ORIG_ARGS), or use --dry-run to see what it would do"
fi

for dir in "$PREFIX" "$ETC"; do
    # Plain absolute paths only: they are written into the unit with sed.
    [[ $dir =~ ^/[A-Za-z0-9._/-]*$ ]] || die "paths must be absolute, without spaces or special characters: $dir"
done
PREFIX=${PREFIX%/}
ETC=${ETC%/}
ROOT=${ROOT%/}
if [[ -n $ROOT ]]; then
    [[ -d $ROOT ]] || die "--root directory does not exist: $ROOT"
    ROOT=$(cd "$ROOT" && pwd)
fi
if [[ -n $WHEELHOUSE ]]; then
    [[ -d $WHEELHOUSE ]] || die "--wheelhouse directory does not exist: $WHEELHOUSE (make one with: make wheelhouse)"
    WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
    compgen -G "$WHEELHOUSE/*.whl" >/dev/null || die "no wheels in $WHEELHOUSE (make one with: make wheelhouse)"
fi

# The source tree: this script is <repo>/systemd/install.sh.
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$SCRIPT_DIR")
UNIT_SRC=$SCRIPT_DIR/$UNIT_NAME
CONFIG_SRC=$REPO_DIR/config/kiosk.example.toml
DOC_SRC=$REPO_DIR/docs/install.md

# Paths as seen by the running system (written into the unit) ...
VENV=$PREFIX/venv
CONFIG=$ETC/kiosk.toml
# ... and as touched by this script (below --root when staging).
R_PREFIX=$ROOT$PREFIX
R_VENV=$ROOT$VENV
R_ETC=$ROOT$ETC
R_CONFIG=$ROOT$CONFIG
R_UNIT=$ROOT$UNIT_DIR/$UNIT_NAME
R_DOC=$ROOT$PREFIX/doc/install.md
R_STAMP=$R_PREFIX/installed-from.sha256
LINK=/usr/local/bin/kiosk
R_LINK=$ROOT$LINK

# run CMD...: run a command that changes the system, or print it (--dry-run).
run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# would TEXT: "TEXT" as a plan (--dry-run) or as news.
would() {
    if [[ $DRY_RUN -eq 1 ]]; then say "would $*"; else say "$*"; fi
}

WORK=
cleanup() { [[ -z $WORK ]] || rm -rf "$WORK"; }
trap cleanup EXIT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiosk-install.XXXXXX")

[[ -f $UNIT_SRC ]] || die "unit file not found: $UNIT_SRC"
[[ -f $REPO_DIR/pyproject.toml ]] || die "no pyproject.toml in $REPO_DIR (run the script from a kiosk source tree)"
if [[ ! -e $R_CONFIG && ! -f $CONFIG_SRC ]]; then
    die "no configuration at $R_CONFIG and no example to install from ($CONFIG_SRC)"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3.11 or newer (sudo apt install python3)"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || die "$PYTHON does not run"

if [[ $DRY_RUN -eq 1 ]]; then
    say "dry run: nothing is changed; commands that would run are printed with a leading +"
fi
if [[ -n $ROOT ]]; then
    say "staging below $ROOT: skipping accounts, ownership and systemctl"
fi
if [[ -n $WHEELHOUSE ]]; then
    say "offline install: Python packages come only from $WHEELHOUSE"
fi

# --- 1. system packages ------------------------------------------------------
# python3-venv makes the venv.  lgpio (the Pi's GPIO library) comes from apt
# where the archive has it (Raspberry Pi OS: python3-lgpio), because PyPI has no
# wheel for every Python and piwheels serves an empty stub (lg #43).  Plain
# Debian has no python3-lgpio: then lgpio comes from a wheel (step 4).
installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == *" installed" ]]; }
apt_has() { [[ -n $(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)"') ]]; }

LGPIO_FROM=apt
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    installed python3-venv || missing+=(python3-venv)
    if installed python3-lgpio; then
        say "python3-lgpio is installed (lgpio from apt)"
    elif apt_has python3-lgpio; then
        missing+=(python3-lgpio)
    else
        LGPIO_FROM=pip
        say "python3-lgpio is not available from apt here (only Raspberry Pi OS's archive has it,"
        say "  plain Debian does not): lgpio will come from ${WHEELHOUSE:-PyPI} as a wheel instead"
    fi
else
    LGPIO_FROM=pip
    say "no dpkg here: not checking system packages; lgpio will come from ${WHEELHOUSE:-PyPI}"
fi
if [[ ${#missing[@]} -eq 0 ]]; then
    say "system packages: nothing to install"
elif [[ $DO_APT -eq 0 ]]; then
    warn "not installing ${missing[*]} (--no-apt); if the next steps fail: sudo apt-get install ${missing[*]}"
else
    would "install ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    if ! run apt-get install -y "${missing[@]}"; then
        say "apt-get install failed; refreshing the package lists and retrying"
        run apt-get update || true
        run apt-get install -y "${missing[@]}" \
            || die "apt-get could not install ${missing[*]} (no network?); install them with 'sudo apt-get install ${missing[*]}' and run this script again"
    fi
fi

# --- 2. service account and device groups -------------------------------------
# A static system user (no login, home = the state directory) so that people
# in group kiosk can read the database with the kiosk CLI.
UNIT_GROUPS=$(sed -n 's/^SupplementaryGroups=//p' "$UNIT_SRC")
if [[ -z $ROOT ]]; then
    if getent group "$SERVICE_USER" >/dev/null; then
        say "group $SERVICE_USER exists"
    else
        run groupadd --system "$SERVICE_USER"
    fi
    if getent passwd "$SERVICE_USER" >/dev/null; then
        say "user $SERVICE_USER exists"
    else
        run useradd --system --gid "$SERVICE_USER" --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "kiosk visitor counter" "$SERVICE_USER"
    fi
    # The dashboard's own user (--with-web): in group kiosk, no login, no home.
    if [[ $WITH_WEB -eq 1 ]]; then
        if getent passwd "$WEB_USER" >/dev/null; then
            say "user $WEB_USER exists"
        else
            run useradd --system --gid "$SERVICE_USER" --home-dir /nonexistent --no-create-home \
                --shell /usr/sbin/nologin --comment "kiosk staff dashboard" "$WEB_USER"
        fi
    fi
    # The unit's SupplementaryGroups (gpio: /dev/gpiochip*; dialout: /dev/ttyUSB*,
    # /dev/ttyAMA*) must exist, or systemd cannot start it (status=216/GROUP).
    # Raspberry Pi OS has both; plain Debian has no gpio: create it, with the
    # udev rule Pi OS ships, so the GPIO chips belong to it.
    for group in $UNIT_GROUPS; do
        if getent group "$group" >/dev/null; then
            continue
        fi
        would "create group $group (the unit needs it; this system has none, e.g. plain Debian)"
        run groupadd --system "$group"
        if [[ $group == gpio && ! -e $GPIO_RULE ]]; then
            would "give /dev/gpiochip* to group gpio with the udev rule $GPIO_RULE"
            if [[ $DRY_RUN -eq 1 ]]; then
                run install -m 0644 /dev/stdin "$GPIO_RULE"
            else
                mkdir -p "$(dirname "$GPIO_RULE")"
                printf '%s\n' '# Installed by kiosk install.sh: as on Raspberry Pi OS, group gpio may use the GPIO chips.' \
                    'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' >"$GPIO_RULE"
                udevadm trigger --subsystem-match=gpio >/dev/null 2>&1 || true
            fi
        fi
    done
    # plugdev: /dev/ttyACM* on Trixie (only if it exists; not in the unit).
    current_groups=" $(id -nG "$SERVICE_USER" 2>/dev/null || true) "
    for group in $UNIT_GROUPS plugdev; do
        if [[ $current_groups == *" $group "* ]]; then
            say "user $SERVICE_USER is in group $group"
        elif getent group "$group" >/dev/null || [[ $DRY_RUN -eq 1 && $group != plugdev ]]; then
            run usermod --append --groups "$group" "$SERVICE_USER"
        fi
    done
fi

# --- 3. virtual environment -----------------------------------------------------
# --system-site-packages makes apt's python3-lgpio importable from the venv.  A
# venv belongs to one Python version: after an OS upgrade (Bookworm 3.11 ->
# Trixie 3.13) the old one has no pip and no packages for the new Python, so it
# is made again.
venv_version() {
    sed -n 's/^version\(_info\)\{0,1\} *= *\([0-9]*\.[0-9]*\).*/\2/p' "$R_VENV/pyvenv.cfg" 2>/dev/null | head -n 1
}
NEW_VENV=0
if [[ -e $R_VENV ]]; then
    old_version=$(venv_version)
    if [[ $old_version != "$PY_VERSION" ]]; then
        would "rebuild the venv in $R_VENV: it was made for Python ${old_version:-(unknown)}, the system's Python is now $PY_VERSION (an OS upgrade?)"
        run "$PYTHON" -m venv --clear --system-site-packages "$R_VENV"
        NEW_VENV=1
    elif ! "$R_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        would "rebuild the venv in $R_VENV: its pip does not run"
        run "$PYTHON" -m venv --clear --system-site-packages "$R_VENV"
        NEW_VENV=1
    else
        say "reusing the venv in $R_VENV (Python $PY_VERSION)"
    fi
else
    would "create a venv for Python $PY_VERSION in $R_VENV"
    run "$PYTHON" -m venv --system-site-packages "$R_VENV"
    NEW_VENV=1
fi

# --- 4. the project, built outside the clone ----------------------------------
# pip would write build/ and kiosk.egg-info into the source tree, owned by root;
# so it builds from a throw-away copy of what the package is made of.
SRC=$WORK/src
mkdir -p "$SRC"
members=()
for member in pyproject.toml README.md LICENSE LICENSE.txt MANIFEST.in setup.cfg setup.py kiosk; do
    [[ -e $REPO_DIR/$member ]] && members+=("$member")
done
tar -C "$REPO_DIR" --exclude=__pycache__ --exclude='*.pyc' -cf - "${members[@]}" | tar -C "$SRC" -xf -
# What would be installed: the sources, the wheels on offer and the Python.
stamp=$(
    cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    printf 'python %s lgpio-from %s\n' "$PY_VERSION" "$LGPIO_FROM"
)
stamp=$(printf '%s\n' "$stamp" | sha256sum | cut -d' ' -f1)
pip=("$R_VENV/bin/python" -m pip install --disable-pip-version-check --no-cache-dir
     --no-warn-script-location --root-user-action=ignore --quiet)
if [[ -n $WHEELHOUSE ]]; then
    pip+=(--no-index --find-links "$WHEELHOUSE")
fi
has_lgpio() { "$R_VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("lgpio") is None)' 2>/dev/null; }

CHANGED=0
if [[ $NEW_VENV -eq 0 && -f $R_STAMP && $(cat "$R_STAMP") == "$stamp" ]]; then
    say "kiosk is already installed from these sources; not reinstalling"
else
    would "install kiosk from a copy of $REPO_DIR into the venv"
    run "${pip[@]}" "$SRC" || die "pip could not install kiosk (see above)${WHEELHOUSE:+; is $WHEELHOUSE complete? (make wheelhouse)}"
    CHANGED=1
    if [[ $DRY_RUN -eq 0 ]]; then
        mkdir -p "$R_PREFIX"
        printf '%s\n' "$stamp" >"$R_STAMP"
    fi
fi
if [[ $LGPIO_FROM == pip ]] && ! has_lgpio; then
    # >= 0.2: the 0.0.0.2 release on PyPI and piwheels is an empty stub.
    would "install lgpio from ${WHEELHOUSE:-PyPI}"
    if run "${pip[@]}" 'lgpio>=0.2' 2>"$WORK/lgpio.log"; then
        CHANGED=1
    else
        sed -n 's/^ERROR: /  pip: /p' "$WORK/lgpio.log" | head -n 2
        warn "no lgpio wheel for Python $PY_VERSION on $(uname -m)${WHEELHOUSE:+ in $WHEELHOUSE}: GPIO sensors"
        warn "  cannot start until lgpio is installed (serial and simulated sensors work)."
        warn "  On Raspberry Pi OS: sudo apt install python3-lgpio.  Elsewhere: build lg"
        warn "  (https://github.com/joan2937/lg), then: sudo $VENV/bin/pip install 'lgpio>=0.2'"
    fi
fi

# install_file SRC DEST MODE [OWNER:GROUP]: copy unless DEST already is the same.
install_file() {
    local src=$1 dest=$2 mode=$3 owner=${4:-}
    if [[ -f $dest ]] && cmp -s "$src" "$dest" && [[ $(stat -c %a "$dest") == "${mode#0}" ]]; then
        return 1
    fi
    if [[ -n $owner && -z $ROOT ]]; then
        run install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$src" "$dest"
    else
        run install -D -m "$mode" "$src" "$dest"
    fi
}
if [[ -f $DOC_SRC ]]; then
    install_file "$DOC_SRC" "$R_DOC" 0644 || true
fi
# Put the CLI on everyone's PATH ("kiosk status"), without clobbering a real file.
if [[ -L $R_LINK && $(readlink "$R_LINK") == "$VENV/bin/kiosk" ]]; then
    say "$R_LINK points to $VENV/bin/kiosk"
elif [[ -e $R_LINK && ! -L $R_LINK ]]; then
    warn "$R_LINK exists and is not our symlink; leaving it alone"
else
    run mkdir -p "$(dirname "$R_LINK")"
    run ln -sfn "$VENV/bin/kiosk" "$R_LINK"
fi

# --- 5. configuration -------------------------------------------------------
# /etc/kiosk is root:kiosk 0750: the service (and group kiosk) may read it,
# nobody else; it holds the upload token.
if [[ ! -d $R_ETC ]]; then
    if [[ -z $ROOT ]]; then
        run install -d -m 0750 -o root -g "$SERVICE_USER" "$R_ETC"
    else
        run install -d -m 0750 "$R_ETC"
    fi
fi
if [[ $DRY_RUN -eq 1 && -d $R_ETC && ! -x $R_ETC ]]; then
    # /etc/kiosk is root:kiosk 0750: a dry run by someone else cannot look inside.
    say "cannot look into $R_ETC as $(id -un) (only root and group $SERVICE_USER can); an existing"
    say "  configuration there is kept (never overwritten); sudo --dry-run gives the exact plan"
elif [[ -e $R_CONFIG ]]; then
    say "keeping the existing configuration $R_CONFIG (never overwritten)"
else
    would "install the example configuration as $R_CONFIG: edit it, then restart kiosk"
    if [[ -z $ROOT ]]; then
        run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_SRC" "$R_CONFIG"
    else
        run install -m 0640 "$CONFIG_SRC" "$R_CONFIG"
    fi
fi

# Validate before enabling: a broken config must fail here, loudly, not in a
# restart loop.  Run it as the service user so an unreadable file (or token)
# shows too.  check-config also warns about a missing or unreadable token.
check=("$R_VENV/bin/kiosk" check-config "$R_CONFIG")
if [[ -z $ROOT && $EUID -eq 0 ]]; then
    check=(runuser -u "$SERVICE_USER" -- "${check[@]}")
fi
if [[ $DRY_RUN -eq 1 ]]; then
    [[ ! -d $R_ETC || -x $R_ETC ]] || check=(sudo -u "$SERVICE_USER" "${check[@]}")
    run "${check[@]}"
elif ! output=$(cd / && "${check[@]}" 2>&1); then
    printf '%s\n' "$output" >&2
    die "the configuration $R_CONFIG is not valid (see above); fix it and run this script again"
else
    printf '%s\n' "$output" | sed 's/^/  /'
    say "configuration $R_CONFIG is valid"
fi

# Where the upload token goes (in a dry run: the example's, if it would be installed).
token_src=$R_CONFIG
[[ -e $token_src || ( -d $R_ETC && ! -x $R_ETC ) ]] || token_src=$CONFIG_SRC
token_file=$(
    "$PYTHON" -c 'import sys, tomllib
try:
    print(tomllib.load(open(sys.argv[1], "rb")).get("upload", {}).get("token_file", ""))
except Exception:
    pass' "$token_src" 2>/dev/null || true
)
if [[ -n $token_file && ! -s $ROOT$token_file ]]; then
    if [[ $DRY_RUN -eq 0 && -z $ROOT && -t 0 ]]; then
        printf 'kiosk-install: paste the upload token from the statistics team (Enter: later): '
        read -r -s token || token=
        printf '\n'
        if [[ -n $token ]]; then
            (umask 077 && printf '%s\n' "$token" >"$token_file")
            chown "root:$SERVICE_USER" "$token_file"
            chmod 0640 "$token_file"
            say "token saved in $token_file (root:$SERVICE_USER, 0640)"
        fi
    fi
    if [[ ! -s $ROOT$token_file ]]; then
        say "uploads wait for the token from the statistics team.  It goes in $token_file:"
        say "  sudo install -m 0640 -o root -g $SERVICE_USER /dev/null $token_file"
        say "  sudoedit $token_file      # paste the token, save"
        say "  sudo -u $SERVICE_USER kiosk sync   # send the counts waiting so far, now"
    fi
fi

# --- 6. systemd unit ----------------------------------------------------------
# Always the script's version (local changes belong in: systemctl edit kiosk).
# Custom --prefix/--etc are written into the installed copy.
unit_tmp=$WORK/$UNIT_NAME
sed -e "s#/opt/kiosk#$PREFIX#g" -e "s#/etc/kiosk#$ETC#g" "$UNIT_SRC" >"$unit_tmp"
if install_file "$unit_tmp" "$R_UNIT" 0644; then
    CHANGED=1
else
    say "unit $R_UNIT is up to date"
fi

# The dashboard's unit (--with-web), likewise always the script's version.
WEB_CHANGED=0
if [[ $WITH_WEB -eq 1 ]]; then
    web_tmp=$WORK/$WEB_UNIT_NAME
    sed -e "s#/opt/kiosk#$PREFIX#g" -e "s#/etc/kiosk#$ETC#g" "$SCRIPT_DIR/$WEB_UNIT_NAME" >"$web_tmp"
    if install_file "$web_tmp" "$ROOT$UNIT_DIR/$WEB_UNIT_NAME" 0644; then
        WEB_CHANGED=1
    else
        say "unit $ROOT$UNIT_DIR/$WEB_UNIT_NAME is up to date"
    fi
fi

# --- 7. start -----------------------------------------------------------------
# Never enable a unit that cannot start: the groups it names must exist.
if [[ -z $ROOT && $DRY_RUN -eq 0 ]]; then
    for group in $UNIT_GROUPS; do
        getent group "$group" >/dev/null \
            || die "group $group does not exist, so $UNIT_NAME cannot start (216/GROUP); not enabling it"
    done
fi
if [[ $DO_START -eq 0 ]]; then
    say "not starting the service (--no-start); to start it:"
    say "  sudo systemctl daemon-reload && sudo systemctl enable --now $UNIT_NAME"
elif [[ -n $ROOT ]]; then
    say "not starting the service (staged below $ROOT)"
elif [[ ! -d /run/systemd/system ]]; then
    # e.g. preparing an SD card image in a chroot: enabling only makes symlinks.
    would "enable $UNIT_NAME for the next boot (systemd is not running here)"
    run systemctl enable "$UNIT_NAME"
else
    if [[ $CHANGED -eq 1 ]]; then
        run systemctl daemon-reload
    fi
    if systemctl is-active --quiet "$UNIT_NAME"; then
        if [[ $CHANGED -eq 1 ]]; then
            # An upgrade must restart a running daemon to load the new code.
            would "restart $UNIT_NAME to run the new version"
            run systemctl restart "$UNIT_NAME" || true
        else
            if [[ $DRY_RUN -eq 1 ]]; then
                say "would leave $UNIT_NAME as it runs: it is up to date"
            else
                say "$UNIT_NAME is running and up to date; not restarting it"
            fi
        fi
    else
        # reset-failed: a service stopped at its start limit may start again.
        would "start $UNIT_NAME"
        run systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
        run systemctl start "$UNIT_NAME" || true
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
        systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null || run systemctl enable "$UNIT_NAME"
    elif systemctl is-active --quiet "$UNIT_NAME"; then
        if ! systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
            run systemctl enable --quiet "$UNIT_NAME"
            say "enabled $UNIT_NAME: it starts at every boot"
        fi
        say "kiosk is running: $(systemctl show -p StatusText --value "$UNIT_NAME")"
        say "check with 'systemctl status kiosk', 'journalctl -u kiosk' and 'kiosk status'"
    else
        systemctl status --no-pager --lines=15 "$UNIT_NAME" >&2 || true
        systemctl stop "$UNIT_NAME" 2>/dev/null || true
        die "$UNIT_NAME did not start (see above); it is stopped and not enabled at boot.  Fix the problem and run this script again"
    fi
fi
# --- 8. the dashboard (--with-web) ---------------------------------------------
# Started after the counter; a dashboard that cannot start (e.g. [web] listen beyond
# loopback without a password file) is shown and left stopped, and the counter runs on.
if [[ $WITH_WEB -eq 1 && $DO_START -eq 1 && -z $ROOT && -d /run/systemd/system ]]; then
    if [[ $WEB_CHANGED -eq 1 && $CHANGED -eq 0 ]]; then
        run systemctl daemon-reload
    fi
    if systemctl is-active --quiet "$WEB_UNIT_NAME" && [[ $WEB_CHANGED -eq 0 && $CHANGED -eq 0 ]]; then
        say "$WEB_UNIT_NAME is running and up to date; not restarting it"
    else
        would "(re)start $WEB_UNIT_NAME"
        run systemctl reset-failed "$WEB_UNIT_NAME" 2>/dev/null || true
        run systemctl restart "$WEB_UNIT_NAME" || true
        [[ $DRY_RUN -eq 1 ]] || sleep 2  # Type=exec: a bad [web] section ends it within a second
    fi
    if [[ $DRY_RUN -eq 1 ]]; then
        systemctl is-enabled --quiet "$WEB_UNIT_NAME" 2>/dev/null || run systemctl enable "$WEB_UNIT_NAME"
    elif systemctl is-active --quiet "$WEB_UNIT_NAME"; then
        systemctl is-enabled --quiet "$WEB_UNIT_NAME" 2>/dev/null \
            || run systemctl enable --quiet "$WEB_UNIT_NAME"
        say "the dashboard runs ($WEB_UNIT_NAME, user $WEB_USER, no access to the upload token)"
        say "  it listens where [web] listen says in $CONFIG (default 127.0.0.1:8080); for the"
        say "  site's network set listen and password_file, then:"
        say "  sudo kiosk web --set-password --config $CONFIG && sudo systemctl restart $WEB_UNIT_NAME"
    else
        systemctl status --no-pager --lines=10 "$WEB_UNIT_NAME" >&2 || true
        systemctl stop "$WEB_UNIT_NAME" 2>/dev/null || true
        warn "$WEB_UNIT_NAME did not start (see above); it is stopped and not enabled.  The"
        warn "  counter runs regardless.  Fix [web] in $CONFIG and run this script again."
    fi
fi
if [[ $DRY_RUN -eq 1 ]]; then
    say "dry run: nothing was changed"
else
    say "done"
fi
