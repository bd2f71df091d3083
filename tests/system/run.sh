#!/usr/bin/env bash
# make test-system: install.sh and the unit under a real systemd, as a Pi owner would.
#
#   tests/system/run.sh --wheelhouse dist/wheelhouse
#
# 1. A Debian Bookworm minbase root from debootstrap, cached outside the clone
#    (tests/system/rootfs.sh; /var/cache/kiosk-test-system/), copied for this run.
# 2. A user "pi" with sudo, the clone (this working tree) in /home/pi/kiosk and the
#    wheelhouse in /home/pi/wheelhouse, owned by pi.
# 3. systemd-nspawn -b boots it with --private-network: no network at all, so the
#    install proves --wheelhouse is enough.
# 4. Inside, with systemctl and journalctl: the checks printed below, one line each.
#
# Needs root, debootstrap and systemd-nspawn (apt-get install debootstrap
# systemd-container).  Without them it says why and skips (exit 0), unless
# KIOSK_SYSTEM_TEST=required (as .ci/run sets), when it fails instead.
# KIOSK_SYSTEM_KEEP=1 keeps the container's root for a look afterwards.
# ok() only prints, so "A && ok … || fail …" is a plain if-then-else here.
# shellcheck disable=SC2001,SC2015,SC2016
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/system/rootfs.sh disable=SC1091
source "$REPO/tests/system/rootfs.sh"

WHEELHOUSE=
while [[ $# -gt 0 ]]; do
    case $1 in
        --wheelhouse) WHEELHOUSE=$2; shift ;;
        *) echo "usage: $0 --wheelhouse DIR" >&2; exit 2 ;;
    esac
    shift
done

skip() {
    if [[ ${KIOSK_SYSTEM_TEST:-} == required ]]; then
        echo "test-system: FAILED: cannot run: $*" >&2
        exit 1
    fi
    echo "test-system: SKIPPED: $* (the system test needs root, debootstrap and systemd-nspawn)" >&2
    exit 0
}
[[ $EUID -eq 0 ]] || skip "not running as root"
for tool in debootstrap systemd-nspawn nsenter chroot; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed (apt-get install debootstrap systemd-container)"
done
[[ -n $WHEELHOUSE && -d $WHEELHOUSE ]] || { echo "test-system: --wheelhouse DIR is required (make wheelhouse)" >&2; exit 2; }
WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)

PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,sudo,procps,iproute2
MACHINE=kioskpi
WORK=$(mktemp -d /var/tmp/kiosk-system.XXXXXX)
ROOTDIR=$WORK/root
NSPAWN_PID=
LEADER=
FAILED=0
MOUNTED=0

# --- timing and reporting ---------------------------------------------------------
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
T0=$(date +%s.%N)
STAGE=
STAGE_T=$T0
TIMINGS=()
stage() {
    local now
    now=$(date +%s.%N)
    if [[ -n $STAGE ]]; then
        TIMINGS+=("$(printf '%6.1f s  %s' "$(minus "$now" "$STAGE_T")" "$STAGE")")
    fi
    STAGE=$1
    STAGE_T=$now
    [[ -z $STAGE ]] || echo "== $STAGE"
}
ok() { echo "   ok: $*"; }
fail() {
    echo "   FAIL: $*" >&2
    FAILED=$((FAILED + 1))
}
check() { # check DESCRIPTION COMMAND...: ok if COMMAND succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}

# --- the container ------------------------------------------------------------------
inside() { nsenter --target "$LEADER" --all -- "$@"; }
as_pi() { inside runuser -l pi -c "$1"; }
sctl() { inside systemctl --no-pager "$@"; }
prop() { sctl show -p "$1" --value kiosk.service; }
wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    local end=$((SECONDS + limit))
    while ((SECONDS < end)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "   (timed out after ${limit} s waiting for: $what)" >&2
    return 1
}

poweroff() {
    if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        if [[ -n $LEADER ]]; then
            inside systemctl poweroff --no-block >/dev/null 2>&1 || kill -s SIGRTMIN+4 "$LEADER" 2>/dev/null || true
        fi
        local end=$((SECONDS + 30))
        while kill -0 "$NSPAWN_PID" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            echo "test-system: the container did not power off in 30 s; killing nspawn (pid $NSPAWN_PID)" >&2
            kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        fi
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    NSPAWN_PID=
}
cleanup() {
    local rc=$?
    poweroff
    if [[ $MOUNTED -eq 1 ]]; then
        umount "$ROOTDIR" || umount -l "$ROOTDIR" || true
    fi
    if [[ ${KIOSK_SYSTEM_KEEP:-0} == 1 ]]; then
        echo "test-system: kept $WORK (console log: $WORK/console.log)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "test-system: interrupted; powering the container off" >&2; exit 130' INT TERM

# --- 1. the root ----------------------------------------------------------------------
stage "debian bookworm minbase root (cached in $KIOSK_SYSTEM_CACHE)"
PRISTINE=$(cached_root bookworm "$(dpkg --print-architecture)" "$PACKAGES")
# This run's changes go to an overlay on the cached root (a copy where overlayfs is missing).
mkdir -p "$ROOTDIR" "$WORK/upper" "$WORK/ovl"
if mount -t overlay kiosk-test -o "lowerdir=$PRISTINE,upperdir=$WORK/upper,workdir=$WORK/ovl" "$ROOTDIR" 2>/dev/null; then
    MOUNTED=1
else
    cp -a "$PRISTINE/." "$ROOTDIR"
fi

stage "prepare: CA certificates, user pi with sudo, the clone and the wheelhouse in /home/pi"
# HTTPS on this network goes through an intercepting proxy; the root trusts what the host does.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOTDIR/usr/local/share/ca-certificates/"
    chroot "$ROOTDIR" update-ca-certificates >/dev/null 2>&1
fi
echo kioskpi >"$ROOTDIR/etc/hostname"  # debootstrap copied the host's
printf '127.0.0.1 localhost\n127.0.1.1 kioskpi\n' >"$ROOTDIR/etc/hosts"
chroot "$ROOTDIR" useradd --create-home --shell /bin/bash --groups sudo pi
echo 'pi ALL=(ALL) NOPASSWD: ALL' >"$ROOTDIR/etc/sudoers.d/pi"
chmod 0440 "$ROOTDIR/etc/sudoers.d/pi"
chroot "$ROOTDIR" useradd --create-home --shell /bin/bash clerk  # joins group kiosk later
# The working tree as a clone would have it: tracked and new files, not what git ignores.
mkdir "$ROOTDIR/home/pi/kiosk"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r -I{} sh -c '[ -e "$1" ] && printf "%s\0" "$1"' sh {}) \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$ROOTDIR/home/pi/kiosk" -xf -
cp -a "$WHEELHOUSE" "$ROOTDIR/home/pi/wheelhouse"
install -D -m 0644 "$REPO/tests/system/dbq.py" "$ROOTDIR/usr/local/lib/kiosk-test/dbq.py"
chroot "$ROOTDIR" chown -R pi:pi /home/pi
# No "apt-get update" can reach anything in there: make that fail fast, not hang.
printf 'Acquire::Retries "0";\nAcquire::http::Timeout "3";\n' >"$ROOTDIR/etc/apt/apt.conf.d/99offline"

stage "boot with systemd-nspawn -b --private-network"
systemd-nspawn --quiet --register=no --keep-unit --private-network -D "$ROOTDIR" -M "$MACHINE" \
    --console=pipe -b >"$WORK/console.log" 2>&1 </dev/null &
NSPAWN_PID=$!
find_leader() {
    LEADER=$(pgrep -P "$NSPAWN_PID" | head -n 1)
    [[ -n $LEADER && $(cat "/proc/$LEADER/comm" 2>/dev/null) == systemd ]]
}
wait_until 30 "the container's systemd" find_leader || { cat "$WORK/console.log" >&2; exit 1; }
state=$(inside timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
echo "   container booted: $state (systemd $(inside systemctl --version | head -n 1 | cut -d' ' -f2))"
inside sh -c '! ip route get 1.1.1.1 >/dev/null 2>&1' && ok "no network in the container (only loopback)" \
    || fail "the container has a route out"

# --- 2. install as the owner would --------------------------------------------------------
stage "install.sh --wheelhouse as pi, with sudo, offline (first run)"
clone_snapshot() { inside find /home/pi/kiosk -printf '%P %U %G %m %s %T@\n' | sort; }
clone_before=$(clone_snapshot)
if as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' >"$WORK/install1.log" 2>&1; then
    ok "install.sh exit 0"
else
    fail "install.sh failed:"; sed 's/^/     | /' "$WORK/install1.log" >&2
fi
sed 's/^/     | /' "$WORK/install1.log"
grep -q 'python3-lgpio is not available from apt here' "$WORK/install1.log" \
    && grep -q 'lgpio will come from /home/pi/wheelhouse' "$WORK/install1.log" \
    && ok "plain Debian: no python3-lgpio, said so; lgpio from the wheelhouse" || fail "no word on python3-lgpio"
inside /opt/kiosk/venv/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("lgpio") is None)' \
    && ok "lgpio is importable in the venv" || fail "lgpio is not in the venv"
grep -q 'would create group gpio\|create group gpio' "$WORK/install1.log" && inside getent group gpio >/dev/null \
    && inside test -f /etc/udev/rules.d/60-kiosk-gpiochip.rules \
    && ok "group gpio (missing on Debian) created with its udev rule" || fail "group gpio not handled"
grep -q 'It goes in /etc/kiosk/token' "$WORK/install1.log" && ok "install.sh says where the token goes" \
    || fail "install.sh did not say where the token goes"
grep -q 'warning: token file /etc/kiosk/token does not exist' "$WORK/install1.log" \
    && ok "check-config warned about the missing token" || fail "no token warning from check-config"
[[ $(clone_snapshot) == "$clone_before" ]] && ok "the clone is exactly as pi had it (no build/, no egg-info, no root files)" \
    || { fail "install.sh changed the clone:"; diff <(echo "$clone_before") <(clone_snapshot) | head -n 20 >&2; }

stage "active (running), STATUS names each sensor"
[[ $(prop ActiveState) == active && $(prop SubState) == running ]] && ok "kiosk.service is active (running)" \
    || fail "kiosk.service is $(prop ActiveState) ($(prop SubState))"
sctl is-enabled --quiet kiosk.service && ok "enabled at boot" || fail "not enabled"
status=$(prop StatusText)
echo "   STATUS=$status"
[[ $status == "counting on 0 of 2 sensors; main-entrance down: "*"no GPIO board found"*"; east-gate down: "* ]] \
    && ok "STATUS names both sensors of the example config and why they are down" || fail "STATUS: $status"
journal=$(inside journalctl -u kiosk --no-pager -o cat)
[[ $journal != *PinFactoryFallback* && $journal != *%%%%* && $journal != *"group 'gpio'"* ]] \
    && ok "no pin-factory fallback noise and no misleading gpio-group hint in the journal" \
    || fail "GPIO noise in the journal"
hardening=$(inside sh -c 'grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/$(systemctl show -p MainPID --value kiosk)/status | tr -s "\t" " " | tr "\n" " "')
[[ $hardening == *"CapEff: 0000000000000000"*"NoNewPrivs: 1"*"Seccomp: 2"* ]] && ok "sandboxed: $hardening" \
    || fail "hardening: $hardening"

# A config with a fast simulated sensor from here on (the owner edits theirs).
SIM_CONFIG='[device]
id = "test-pi-01"
site = "system-test"
timezone = "Europe/Helsinki"

[storage]
path = "/var/lib/kiosk/counts.db"
flush_interval_s = 60

[[sensors]]
id = "sim"
type = "simulated"
weekday_visits = 5000000
weekend_visits = 5000000
weekday_hours = "00:00-24:00"
weekend_hours = "00:00-24:00"
mean_stay_min = 0.05

[upload]
url = "http://127.0.0.1:8080/api/v1/visitor-counts"
token_file = "/etc/kiosk/token"
'
put_config() { printf '%s' "$1" | inside sh -c 'cat > /etc/kiosk/kiosk.toml'; }

stage "systemctl reload: takes effect before it returns; a refused config fails it"
pid_before=$(prop MainPID)
put_config "$SIM_CONFIG"
if sctl reload kiosk.service; then ok "systemctl reload exit 0"; else fail "systemctl reload failed"; fi
status=$(prop StatusText)  # read at once: the reload is complete when systemctl returns
[[ $status == "counting on 1 of 1 sensor" ]] && ok "new config in effect when reload returned: STATUS=$status" \
    || fail "STATUS right after reload: $status"
[[ $(prop MainPID) == "$pid_before" ]] && ok "same daemon (pid $pid_before), no restart" || fail "the daemon was restarted"
order=$(inside journalctl -u kiosk --no-pager -o cat | grep -n -e 'config reloaded from' -e '^Reloaded ' | tail -n 2)
[[ $order == *"config reloaded from"*$'\n'*"Reloaded "* ]] \
    && ok "journal: the daemon's 'config reloaded' comes before systemd's 'Reloaded'" \
    || fail "reload order in the journal: $order"
put_config "${SIM_CONFIG/type = \"simulated\"/type = \"simulatd\"}"
if sctl reload kiosk.service 2>/dev/null; then fail "reload of a broken config reported success"; else
    ok "systemctl reload of a broken config fails"; fi
[[ $(prop ActiveState) == active && $(prop MainPID) == "$pid_before" ]] \
    && ok "the daemon keeps running on the old config" || fail "a refused reload disturbed the daemon"
put_config "$SIM_CONFIG"
sctl reload kiosk.service || fail "reload after restoring the config"

stage "no NTP answer yet: pulses are kept unplaced, then placed when timesyncd's flag appears"
held=$(inside /opt/kiosk/venv/bin/kiosk status --config /etc/kiosk/kiosk.toml 2>&1 || true)
if [[ $held == *"clock:    NOT SET yet"* ]]; then
    ok "kiosk status: $(grep -o 'clock:    NOT SET yet.*' <<<"$held" | cut -c1-110)…"
    inside mkdir -p /run/systemd/timesync
    inside touch /run/systemd/timesync/synchronized  # what systemd-timesyncd does once NTP answers
    if wait_until 20 "the clock set in the journal" sh -c "nsenter --target $LEADER --all -- journalctl -u kiosk --no-pager -o cat | grep -q 'the wall clock is set'"; then
        ok "journal: $(inside journalctl -u kiosk --no-pager -o cat | grep 'the wall clock is set' | tail -n 1 | cut -c1-150)"
    else
        fail "the held pulses were not placed after timesyncd's flag appeared"
    fi
    after_sync=$(inside /opt/kiosk/venv/bin/kiosk status --config /etc/kiosk/kiosk.toml 2>&1 || true)
    [[ $after_sync != *"NOT SET"* ]] && ok "kiosk status no longer says NOT SET" || fail "still NOT SET: $after_sync"
else
    ok "this kernel's clock is synchronised: nothing to hold (kiosk status: no NOT SET line)"
fi

stage "watchdog: a SIGSTOPped daemon is killed and restarted (WatchdogSec=3 drop-in)"
inside mkdir -p /etc/systemd/system/kiosk.service.d
printf '[Service]\nWatchdogSec=3\n' | inside sh -c 'cat > /etc/systemd/system/kiosk.service.d/50-test-watchdog.conf'
sctl daemon-reload
sctl restart kiosk.service
pid=$(prop MainPID)
restarts=$(prop NRestarts)
inside kill -STOP "$pid"
wait_until 30 "a new main pid after the watchdog" sh -c "[ \"\$(nsenter --target $LEADER --all -- systemctl show -p MainPID --value kiosk)\" != $pid ] && nsenter --target $LEADER --all -- systemctl is-active --quiet kiosk" \
    && ok "restarted: pid $pid -> $(prop MainPID), NRestarts $restarts -> $(prop NRestarts)" || fail "no watchdog restart"
# journald may write the line a moment after the restart: wait for it
wait_until 10 "the watchdog line in the journal" sh -c "nsenter --target $LEADER --all -- journalctl -u kiosk --no-pager -o cat | grep -q 'Watchdog timeout'" \
    && ok "journal: Watchdog timeout" || fail "no 'Watchdog timeout' in the journal"
inside rm /etc/systemd/system/kiosk.service.d/50-test-watchdog.conf
inside rmdir /etc/systemd/system/kiosk.service.d
sctl daemon-reload

stage "systemctl stop loses nothing (simulated sensor, ~60 visitors/s, flush every 60 s)"
sctl restart kiosk.service
sleep 12  # the first flush is at start; the next write is the 30 s heartbeat
before=$(inside /opt/kiosk/venv/bin/python /usr/local/lib/kiosk-test/dbq.py /var/lib/kiosk/counts.db)
t_stop=$(inside date +%s.%N)
if sctl stop kiosk.service; then ok "systemctl stop exit 0"; else fail "systemctl stop failed"; fi
t_done=$(inside date +%s.%N)
after=$(inside /opt/kiosk/venv/bin/python /usr/local/lib/kiosk-test/dbq.py /var/lib/kiosk/counts.db)
echo "   before stop: $before"
echo "   after stop:  $after   (stop took $(minus "$t_done" "$t_stop") s)"
[[ $(prop Result) == success && $(prop ExecMainStatus) == 0 ]] && ok "Result=success, exit status 0" \
    || fail "Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus)"
verdict=$(python3 - "$before" "$after" "$t_stop" <<'EOF'
import json, sys
b, a, t_stop = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
problems = []
held = a["total"] - b["total"]
if held < 100:
    problems.append(f"only {held} visits landed at the stop (expected the ~12 s held in memory)")
if a["total"] != a["event_total"]:
    problems.append(f"counts {a['total']} != raw events {a['event_total']}")
if a["stop_reason"] != "SIGTERM" or a["run_stopped"] is None:
    problems.append(f"run record: {a['stop_reason']!r}")
gap = a["run_stopped"] - a["last_event"]
if not 0 <= gap < 2.0:  # the simulator ticks every second; a lost tail would leave seconds
    problems.append(f"last stored visit {gap:.2f} s before the stop")
print("; ".join(problems) or f"{held} visits held in memory landed at the stop; last one {gap:.2f} s before it")
sys.exit(1 if problems else 0)
EOF
) && ok "$verdict" || fail "$verdict"
inside journalctl -u kiosk --no-pager -o cat | grep -q counts-lost && fail "counts-lost in the journal" \
    || ok "no counts-lost in the journal"

stage "a group-kiosk user's 'kiosk status' while stopped does not keep it from starting"
inside usermod -aG kiosk clerk
rc=0
inside runuser -u clerk -- sh -c 'umask 0002; cd ~ && kiosk status' >"$WORK/status.log" 2>&1 || rc=$?
if [[ $rc == 3 ]] && grep -q "daemon:   STOPPED" "$WORK/status.log"; then  # 3: the daemon is stopped
    ok "kiosk status as clerk (group kiosk) while stopped: STOPPED, exit status 3"; else
    fail "kiosk status as clerk (exit status $rc):"; sed 's/^/     | /' "$WORK/status.log" >&2; fi
inside ls -la /var/lib/kiosk | sed 's/^/     | /'
if sctl start kiosk.service; then ok "systemctl start after it"; else fail "start after a reader"; fi
count0=$(inside /opt/kiosk/venv/bin/python /usr/local/lib/kiosk-test/dbq.py /var/lib/kiosk/counts.db)
counted_more() { # a reload writes (flush): new visits in the database prove it is writable
    sctl reload kiosk.service
    count1=$(inside /opt/kiosk/venv/bin/python /usr/local/lib/kiosk-test/dbq.py /var/lib/kiosk/counts.db)
    python3 -c 'import json,sys; a,b=(json.loads(x)["total"] for x in sys.argv[1:]); sys.exit(b <= a)' "$count0" "$count1"
}
wait_until 20 "new visits written" counted_more \
    && ok "the daemon writes its database again (visits: $(echo "$count0" | cut -d, -f1 | cut -d' ' -f2) -> $(echo "$count1" | cut -d, -f1 | cut -d' ' -f2))" \
    || fail "no writes after a reader: $count0 -> $count1"
inside journalctl -u kiosk --no-pager -p err -o cat --since "-20s" | grep -i -e 'readonly\|locked\|permission' \
    && fail "errors after the reader" || ok "no locked/readonly/permission errors"

stage "the token step, as install.sh printed it (reference receiver on 127.0.0.1:8080)"
inside sh -c 'echo s3cret-city-token > /var/tmp/recv-token'
inside systemd-run --quiet --unit=test-receiver --property=WorkingDirectory=/var/tmp \
    /opt/kiosk/venv/bin/kiosk receiver --port 8080 --db /var/tmp/recv.db --token-file /var/tmp/recv-token
wait_until 20 "the receiver" inside python3 -c 'import socket; socket.create_connection(("127.0.0.1", 8080), 1)'
if as_pi 'sudo -u kiosk kiosk sync' >"$WORK/sync1.log" 2>&1; then fail "sync without a token succeeded"; else
    grep -q 'token file /etc/kiosk/token does not exist' "$WORK/sync1.log" \
        && ok "without the token: $(grep -m1 'token file' "$WORK/sync1.log")" || { fail "sync without token:"; cat "$WORK/sync1.log" >&2; }
fi
# The commands install.sh printed; sudoedit gets the token on stdin through SUDO_EDITOR=tee.
steps=$(grep -A3 'It goes in /etc/kiosk/token' "$WORK/install1.log" | sed -n 's/^kiosk-install:   //p' | sed 's/ *#.*//')
echo "$steps" | sed 's/^/     $ /'
[[ $(echo "$steps" | sed -n 1p) == "sudo install -m 0640 -o root -g kiosk /dev/null /etc/kiosk/token" \
    && $(echo "$steps" | sed -n 2p) == "sudoedit /etc/kiosk/token" \
    && $(echo "$steps" | sed -n 3p) == "sudo -u kiosk kiosk sync" ]] || fail "unexpected token steps"
as_pi "$(echo "$steps" | sed -n 1p)" \
    && as_pi "echo s3cret-city-token | SUDO_EDITOR=tee $(echo "$steps" | sed -n 2p) >/dev/null" \
    && [[ $(inside stat -c '%U:%G %a' /etc/kiosk/token) == "root:kiosk 640" ]] \
    && ok "token in place: $(inside stat -c '%n %U:%G %a' /etc/kiosk/token)" || fail "token steps"
if as_pi "$(echo "$steps" | sed -n 3p)" >"$WORK/sync2.log" 2>&1; then ok "with the token: $(tail -n 1 "$WORK/sync2.log")"
else fail "sync with the token:"; cat "$WORK/sync2.log" >&2; fi
inside runuser -u kiosk -- kiosk check-config /etc/kiosk/kiosk.toml 2>&1 | grep -q warning \
    && fail "check-config still warns" || ok "check-config (as kiosk) has no warning now"
inside systemctl stop test-receiver
# Run from a terminal, install.sh asks for a missing token (script(1) gives it a pty).
inside rm /etc/kiosk/token
as_pi "printf 'typed-token\\n' | script -qec 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' /dev/null" \
    >"$WORK/install-tty.log" 2>&1 || true
grep -q 'paste the upload token' "$WORK/install-tty.log" \
    && [[ $(inside cat /etc/kiosk/token) == typed-token && $(inside stat -c '%U:%G %a' /etc/kiosk/token) == "root:kiosk 640" ]] \
    && ok "in a terminal install.sh asked for the token and saved it root:kiosk 0640" \
    || { fail "token prompt:"; sed 's/^/     | /' "$WORK/install-tty.log" >&2; }

stage "a broken config stops at the start limit, with the error in journalctl -p err"
put_config "${SIM_CONFIG/flush_interval_s = 60/flush_interval_s = \"often\"}"
# The limit counts every start in StartLimitIntervalSec, the restarts above too:
# reset-failed zeroes it, so this run counts from here (as after install.sh).
sctl reset-failed kiosk.service
t_broken=$(inside date '+%Y-%m-%d %H:%M:%S')
sctl restart kiosk.service 2>/dev/null || true
gave_up() {
    [[ $(prop ActiveState) == failed ]] \
        && inside journalctl -u kiosk --no-pager -o cat --since "$t_broken" | grep -q 'Start request repeated too quickly'
}
t_limit=$SECONDS
wait_until 90 "the start limit" gave_up \
    && ok "gave up after $((SECONDS - t_limit)) s: $(prop NRestarts) restarts, ActiveState=$(prop ActiveState), 'Start request repeated too quickly'" \
    || fail "no start limit: ActiveState=$(prop ActiveState) NRestarts=$(prop NRestarts)"
restarts=$(prop NRestarts)
sleep 7
[[ $(prop ActiveState) == failed && $(prop NRestarts) == "$restarts" ]] \
    && ok "still failed 7 s later (RestartSec=5): no restart loop" || fail "it restarts again"
err=$(inside journalctl -u kiosk --no-pager -p err -o cat --since "$t_broken")
[[ $err == *"flush_interval_s"* ]] && ok "journalctl -p err: $(echo "$err" | grep -m1 flush_interval_s)" \
    || fail "the config error is not in journalctl -p err: $err"
sctl status kiosk.service >"$WORK/status-failed.log" 2>&1 || true
sed 's/^/     | /' "$WORK/status-failed.log"
grep -q 'Active: failed' "$WORK/status-failed.log" && grep -q 'Status: "failed: .*flush_interval_s' "$WORK/status-failed.log" \
    && ok "systemctl status: failed, with the daemon's last error as Status" \
    || fail "systemctl status does not show the error"

stage "fixed config: install.sh again starts it (reset-failed), offline"
put_config "$SIM_CONFIG"
as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' >"$WORK/install2.log" 2>&1 \
    && sctl is-active --quiet kiosk.service && ok "running again: $(prop StatusText)" \
    || { fail "install.sh did not bring it back:"; sed 's/^/     | /' "$WORK/install2.log" >&2; }

stage "Bookworm -> Trixie: a venv of another Python is rebuilt (offline)"
# What the upgrade leaves: the venv's packages under an old pythonX.Y the new Python does not read.
inside sh -c 'cd /opt/kiosk/venv && sed -i "s/^version *= *3\.11\.[0-9]*/version = 3.10.0/" pyvenv.cfg && mv lib/python3.11 lib/python3.10'
inside /opt/kiosk/venv/bin/python -m pip --version >/dev/null 2>&1 && fail "the broken venv still has pip" \
    || ok "reproduced: the old venv has no pip for this Python"
as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' >"$WORK/install3.log" 2>&1 \
    && grep -q 'rebuild the venv in /opt/kiosk/venv: it was made for Python 3.10' "$WORK/install3.log" \
    && sctl is-active --quiet kiosk.service && ok "venv rebuilt and kiosk running: $(prop StatusText)" \
    || { fail "venv rebuild:"; sed 's/^/     | /' "$WORK/install3.log" >&2; }

stage "a unit that cannot start is not enabled (a drop-in names a group that does not exist)"
sctl disable --quiet --now kiosk.service
inside mkdir -p /etc/systemd/system/kiosk.service.d
printf '[Service]\nSupplementaryGroups=nosuchgroup\n' | inside sh -c 'cat > /etc/systemd/system/kiosk.service.d/50-test-group.conf'
sctl daemon-reload
if as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' >"$WORK/install5.log" 2>&1; then
    fail "install.sh succeeded with a unit that cannot start"
else
    grep -q 'kiosk.service did not start (see above); it is stopped and not enabled at boot' "$WORK/install5.log" \
        && ok "install.sh exit 1: $(grep -m1 'did not start' "$WORK/install5.log" | cut -c1-90)…" \
        || { fail "install.sh output:"; sed 's/^/     | /' "$WORK/install5.log" >&2; }
fi
grep -q '216/GROUP' "$WORK/install5.log" && ok "it showed systemctl status with 216/GROUP" || fail "no status shown"
[[ $(sctl is-enabled kiosk.service 2>/dev/null || true) == disabled && $(prop ActiveState) != active ]] \
    && ok "kiosk.service stays disabled and is not running ($(prop ActiveState))" \
    || fail "is-enabled: $(sctl is-enabled kiosk.service 2>&1), $(prop ActiveState)"
inside rm -r /etc/systemd/system/kiosk.service.d
sctl daemon-reload
as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' >"$WORK/install6.log" 2>&1 \
    && sctl is-enabled --quiet kiosk.service && sctl is-active --quiet kiosk.service \
    && ok "drop-in gone: install.sh starts and enables it again" \
    || { fail "recovery:"; sed 's/^/     | /' "$WORK/install6.log" >&2; }

stage "install.sh run twice changes nothing and keeps the config"
system_snapshot() {
    inside sh -c 'find /etc/kiosk /opt/kiosk /etc/systemd/system /usr/local/bin /etc/udev/rules.d \
        -printf "%p %U %G %m %s %T@\n" | sort; md5sum /etc/kiosk/kiosk.toml; getent group kiosk gpio dialout; \
        getent passwd kiosk; systemctl show -p MainPID -p NRestarts -p UnitFileState kiosk'
}
snap1=$(system_snapshot)
as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse' >"$WORK/install4.log" 2>&1 \
    || { fail "install.sh (again) failed"; sed 's/^/     | /' "$WORK/install4.log" >&2; }
snap2=$(system_snapshot)
[[ $snap1 == "$snap2" ]] && ok "no file, account or process changed (same MainPID, config kept)" \
    || { fail "the second run changed:"; diff <(echo "$snap1") <(echo "$snap2") | head -n 20 >&2; }
grep -q 'keeping the existing configuration' "$WORK/install4.log" \
    && grep -q 'already installed from these sources' "$WORK/install4.log" \
    && grep -q 'running and up to date; not restarting' "$WORK/install4.log" \
    && ok "it said so: config kept, nothing reinstalled, not restarted" || fail "second run messages"
[[ $(clone_snapshot) == "$clone_before" ]] && ok "the clone is still exactly as pi had it" || fail "the clone changed"

stage "dry run as pi (no sudo) claims nothing"
as_pi 'cd ~/kiosk && ./systemd/install.sh --dry-run --wheelhouse ~/wheelhouse' >"$WORK/dry.log" 2>&1 \
    && ! grep -q -e 'is running' -e '^kiosk-install: done' "$WORK/dry.log" \
    && tail -n 1 "$WORK/dry.log" | grep -q 'dry run: nothing was changed' \
    && ok "dry run: only what it would do" || { fail "dry run:"; cat "$WORK/dry.log" >&2; }

stage "install.sh --with-web: the dashboard as its own user, without the token"
inside sh -c 'printf "\n[web]\nlisten = \"127.0.0.1:8091\"\n" >> /etc/kiosk/kiosk.toml'
if as_pi 'cd ~/kiosk && sudo ./systemd/install.sh --wheelhouse ~/wheelhouse --with-web' >"$WORK/web.log" 2>&1; then
    ok "install.sh --with-web exit 0: $(grep -o 'the dashboard runs.*' "$WORK/web.log" | head -n 1)"
else
    fail "install.sh --with-web failed:"; sed 's/^/     | /' "$WORK/web.log" >&2
fi
web_pid=$(sctl show -p MainPID --value kiosk-web.service)
[[ $(sctl is-active kiosk-web.service) == active && $(sctl is-enabled kiosk-web.service) == enabled ]] \
    && ok "kiosk-web.service active and enabled (pid $web_pid)" || fail "kiosk-web.service is not running"
web_user=$(inside ps -o user= -p "$web_pid" 2>/dev/null | tr -d ' ')
[[ $web_user == kiosk-web ]] && ok "it runs as kiosk-web" || fail "it runs as '$web_user'"
if wait_until 20 "the dashboard answers" inside python3 -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:8091/", timeout=2)'; then
    page=$(inside python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:8091/", timeout=5).read().decode())')
    [[ $page == *sim* ]] && ok "http://127.0.0.1:8091/ answers with the Now page (sensor sim on it)" \
        || fail "the Now page does not name sensor sim"
else
    fail "the dashboard does not answer on 127.0.0.1:8091"; sctl status kiosk-web.service >&2 || true
fi
seen=$(inside nsenter --target "$web_pid" --mount -- ls /etc/kiosk 2>&1 | tr '\n' ' ')
[[ $seen != *token* && $seen == *kiosk.toml* ]] && ok "its /etc/kiosk holds no token: $seen" \
    || fail "the dashboard sees: $seen"

stage "power off"
poweroff
ok "container powered off"
stage ""

echo "== stage timings"
printf '   %s\n' "${TIMINGS[@]}"
printf '   %6.1f s  total\n' "$(minus "$(date +%s.%N)" "$T0")"
if [[ $FAILED -gt 0 ]]; then
    echo "test-system: $FAILED check(s) FAILED" >&2
    exit 1
fi
echo "test-system: all checks passed"
