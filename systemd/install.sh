#!/usr/bin/env bash
# Install or upgrade the kiosk visitor counter as a systemd service on
# Raspberry Pi OS (Bookworm or Trixie).  Safe to run again: every step checks
# what is already there, and an existing configuration is never overwritten.
#
#   sudo ./systemd/install.sh            # install or upgrade, then (re)start
#   ./systemd/install.sh --dry-run       # only print what would be done
#
# See docs/install.md for what each step is for.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install.sh [OPTIONS]

Install or upgrade the kiosk service from the source tree this script lives in.

Options:
  --no-apt        do not apt-get install python3-venv python3-lgpio
  --no-start      do not run systemctl daemon-reload / enable / (re)start
  --dry-run       print the commands that change the system instead of running them
  --prefix DIR    install the venv under DIR/venv        (default: /opt/kiosk)
  --etc DIR       configuration directory                (default: /etc/kiosk)
  --root DIR      stage everything below DIR (like DESTDIR, also read from
                  $DESTDIR); skips user/group creation, chown and systemctl
  -h, --help      show this help

Environment:
  PYTHON          interpreter used to create the venv    (default: python3)
  DESTDIR         same as --root
EOF
}

PREFIX=/opt/kiosk
ETC=/etc/kiosk
ROOT=${DESTDIR:-}
DO_APT=1
DO_START=1
DRY_RUN=0
PYTHON=${PYTHON:-python3}

SERVICE_USER=kiosk
STATE_DIR=/var/lib/kiosk
UNIT_NAME=kiosk.service
UNIT_DIR=/etc/systemd/system

say() { printf 'kiosk-install: %s\n' "$*"; }
die() { printf 'kiosk-install: error: %s\n' "$*" >&2; exit 1; }

ORIG_ARGS=$*
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-apt) DO_APT=0 ;;
        --no-start) DO_START=0 ;;
        --dry-run) DRY_RUN=1 ;;
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
R_VENV=$ROOT$VENV
R_ETC=$ROOT$ETC
R_CONFIG=$ROOT$CONFIG
R_UNIT=$ROOT$UNIT_DIR/$UNIT_NAME
R_DOC=$ROOT$PREFIX/doc/install.md
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

[[ -f $UNIT_SRC ]] || die "unit file not found: $UNIT_SRC"
[[ -f $REPO_DIR/pyproject.toml ]] || die "no pyproject.toml in $REPO_DIR (run the script from a kiosk source tree)"
if [[ ! -e $R_CONFIG && ! -f $CONFIG_SRC ]]; then
    die "no configuration at $R_CONFIG and no example to install from ($CONFIG_SRC)"
fi

if [[ $DRY_RUN -eq 1 ]]; then
    say "dry run: nothing is changed, commands are printed with a leading +"
fi
if [[ -n $ROOT ]]; then
    say "staging below $ROOT: skipping accounts, ownership and systemctl"
fi

# --- 1. system packages ------------------------------------------------------
# python3-lgpio comes from apt, not pip: PyPI has no wheels for every Python on
# Pi OS, and piwheels serves an empty stub (lg #43).
if [[ $DO_APT -eq 1 ]]; then
    say "installing python3-venv and python3-lgpio with apt"
    export DEBIAN_FRONTEND=noninteractive
    if ! run apt-get install -y python3-venv python3-lgpio; then
        say "apt-get install failed; refreshing the package lists and retrying"
        run apt-get update
        run apt-get install -y python3-venv python3-lgpio
    fi
else
    say "skipping apt (--no-apt)"
fi

# --- 2. service account ------------------------------------------------------
# A static system user (no login, home = the state directory) so that people
# in group kiosk can read the database with the kiosk CLI.
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
    # gpio: /dev/gpiochip*; dialout: /dev/ttyUSB*, /dev/ttyAMA*;
    # plugdev: /dev/ttyACM* on Trixie.  Only groups that exist on this system.
    current_groups=" $(id -nG "$SERVICE_USER" 2>/dev/null || true) "
    for group in gpio dialout plugdev; do
        if ! getent group "$group" >/dev/null; then
            say "group $group does not exist here, not adding $SERVICE_USER to it"
            if [[ $group != plugdev ]]; then
                say "warning: the unit lists SupplementaryGroups=gpio dialout; without group"
                say "warning: $group systemd cannot start it (status=216/GROUP): not a Pi OS image?"
            fi
        elif [[ $current_groups == *" $group "* ]]; then
            say "user $SERVICE_USER is already in group $group"
        else
            run usermod --append --groups "$group" "$SERVICE_USER"
        fi
    done
fi

# --- 3. virtual environment and the project -----------------------------------
# --system-site-packages makes apt's python3-lgpio importable from the venv.
if [[ -x $R_VENV/bin/python ]] && "$R_VENV/bin/python" -c '' 2>/dev/null; then
    say "reusing the venv in $R_VENV"
elif [[ -e $R_VENV ]]; then
    # e.g. after an OS upgrade changed the Python version under the venv.
    say "the venv in $R_VENV is broken; recreating it"
    run "$PYTHON" -m venv --clear --system-site-packages "$R_VENV"
else
    run "$PYTHON" -m venv --system-site-packages "$R_VENV"
fi
say "installing kiosk from $REPO_DIR"
run "$R_VENV/bin/python" -m pip install --disable-pip-version-check "$REPO_DIR"
if [[ -f $DOC_SRC ]]; then
    run install -D -m 0644 "$DOC_SRC" "$R_DOC"
fi
# Put the CLI on everyone's PATH ("kiosk status"), without clobbering a real file.
if [[ -L $R_LINK && $(readlink "$R_LINK") == "$VENV/bin/kiosk" ]]; then
    say "$R_LINK already points to $VENV/bin/kiosk"
elif [[ -e $R_LINK && ! -L $R_LINK ]]; then
    say "warning: $R_LINK exists and is not our symlink; leaving it alone"
else
    run mkdir -p "$(dirname "$R_LINK")"
    run ln -sfn "$VENV/bin/kiosk" "$R_LINK"
fi

# --- 4. configuration -------------------------------------------------------
# /etc/kiosk is root:kiosk 0750: the service (and group kiosk) may read it,
# nobody else; it may hold the upload token.
if [[ -z $ROOT ]]; then
    run install -d -m 0750 -o root -g "$SERVICE_USER" "$R_ETC"
else
    run install -d -m 0750 "$R_ETC"
fi
if [[ -e $R_CONFIG ]]; then
    say "keeping the existing configuration $R_CONFIG (never overwritten)"
else
    say "installing the example configuration as $R_CONFIG: edit it, then restart kiosk"
    if [[ -z $ROOT ]]; then
        run install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_SRC" "$R_CONFIG"
    else
        run install -m 0640 "$CONFIG_SRC" "$R_CONFIG"
    fi
fi

# Validate before enabling: a broken config must fail here, loudly, not in a
# restart loop.  Run it as the service user so an unreadable file fails too.
check=("$R_VENV/bin/kiosk" check-config "$R_CONFIG")
if [[ -z $ROOT && $EUID -eq 0 ]]; then
    check=(runuser -u "$SERVICE_USER" -- "${check[@]}")
fi
if [[ $DRY_RUN -eq 1 ]]; then
    run "${check[@]}"
elif ! output=$(cd / && "${check[@]}" 2>&1); then
    printf '%s\n' "$output" >&2
    die "the configuration $R_CONFIG is not valid (see above); fix it and run this script again"
else
    say "configuration $R_CONFIG is valid"
fi

# --- 5. systemd unit ----------------------------------------------------------
# Always replaced (local changes belong in: systemctl edit kiosk).  Custom
# --prefix/--etc are written into the installed copy.
unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed -e "s#/opt/kiosk#$PREFIX#g" -e "s#/etc/kiosk#$ETC#g" "$UNIT_SRC" >"$unit_tmp"
if [[ -f $R_UNIT ]] && cmp -s "$unit_tmp" "$R_UNIT"; then
    say "unit $R_UNIT is up to date"
else
    run install -D -m 0644 "$unit_tmp" "$R_UNIT"
fi

# --- 6. start -----------------------------------------------------------------
if [[ $DO_START -eq 0 ]]; then
    say "not starting the service (--no-start); to start it:"
    say "  systemctl daemon-reload && systemctl enable --now $UNIT_NAME"
elif [[ -n $ROOT ]]; then
    say "not starting the service (staged below $ROOT)"
elif [[ ! -d /run/systemd/system ]]; then
    # e.g. preparing an SD card image in a chroot: enabling only makes symlinks.
    say "systemd is not running here: enabling $UNIT_NAME for the next boot"
    run systemctl enable "$UNIT_NAME"
else
    run systemctl daemon-reload
    run systemctl enable "$UNIT_NAME"
    # An upgrade must restart a running daemon to load the new code.
    if systemctl is-active --quiet "$UNIT_NAME"; then
        run systemctl restart "$UNIT_NAME"
    else
        run systemctl start "$UNIT_NAME"
    fi
    say "kiosk is running: check with 'systemctl status kiosk' and 'journalctl -u kiosk'"
fi
say "done"
