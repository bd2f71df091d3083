"""Tests for the sd_notify client, the systemd unit and install.sh."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from kiosk import systemd as sd

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "kiosk.service"
INSTALL_SH = REPO / "systemd" / "install.sh"
EXEC_START = "/opt/kiosk/venv/bin/kiosk"
MAX_EXPOSURE = 2.0

# Keep systemd tools from paging, colouring or asking for a password.
SYSTEMD_ENV = {**os.environ, "SYSTEMD_PAGER": "cat", "SYSTEMD_COLORS": "0", "LC_ALL": "C"}


# --- sd_notify ---------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound AF_UNIX datagram socket with $NOTIFY_SOCKET pointing at it."""
    short_dir = None
    path = tmp_path / "notify"
    if len(os.fsencode(path)) >= 100:  # sun_path holds 108 bytes
        short_dir = tempfile.mkdtemp(prefix="sd-")
        path = Path(short_dir) / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.fspath(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", os.fspath(path))
    try:
        yield sock
    finally:
        sock.close()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


@pytest.fixture
def abstract_notify_socket(monkeypatch):
    """The same, in Linux's abstract namespace ($NOTIFY_SOCKET starts with '@')."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the abstract socket namespace is Linux-only")
    name = f"kiosk-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_notify_sends_one_datagram(notify_socket):
    assert sd.notify("READY=1\nSTATUS=hello") is True
    assert received(notify_socket) == "READY=1\nSTATUS=hello"


def test_notify_abstract_namespace(abstract_notify_socket):
    assert sd.notify("WATCHDOG=1") is True
    assert received(abstract_notify_socket) == "WATCHDOG=1"


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda: sd.ready(), "READY=1"),
        (lambda: sd.ready("counting on GPIO17"), "READY=1\nSTATUS=counting on GPIO17"),
        (lambda: sd.stopping(), "STOPPING=1"),
        (lambda: sd.status("uploaded 3 hours"), "STATUS=uploaded 3 hours"),
        (lambda: sd.status("two\nlines"), "STATUS=two lines"),
        (lambda: sd.watchdog_ping(), "WATCHDOG=1"),
    ],
)
def test_helpers_send_the_protocol_messages(notify_socket, call, expected):
    assert call() is True
    assert received(notify_socket) == expected


@pytest.mark.parametrize("value", [None, ""])
def test_no_socket_is_a_quiet_noop(monkeypatch, caplog, value):
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    with caplog.at_level(logging.DEBUG, logger="kiosk.systemd"):
        assert sd.notify("READY=1") is False
        assert sd.ready() is False
        assert sd.watchdog_ping() is False
    assert caplog.records == []


def test_unreachable_socket_returns_false_and_logs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", os.fspath(tmp_path / "gone"))
    with caplog.at_level(logging.DEBUG, logger="kiosk.systemd"):
        assert sd.notify("READY=1") is False
    assert any("READY=1" in r.getMessage() for r in caplog.records)
    assert all(r.name == "kiosk.systemd" and r.levelno == logging.DEBUG for r in caplog.records)


def test_socket_that_is_not_listening_returns_false_and_logs(tmp_path, monkeypatch, caplog):
    path = tmp_path / "plain-file"
    path.write_text("not a socket")
    monkeypatch.setenv("NOTIFY_SOCKET", os.fspath(path))
    with caplog.at_level(logging.DEBUG, logger="kiosk.systemd"):
        assert sd.watchdog_ping() is False
    assert caplog.records, "a failed send must be logged, not swallowed silently"


def test_unsupported_address_returns_false(monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.DEBUG, logger="kiosk.systemd"):
        assert sd.notify("READY=1") is False
    assert "vsock" in caplog.text


# --- watchdog_period ------------------------------------------------------------


@pytest.fixture
def no_watchdog(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return monkeypatch


def test_watchdog_disabled_without_env(no_watchdog):
    assert sd.watchdog_period() is None


def test_watchdog_period_in_seconds_without_pid(no_watchdog):
    no_watchdog.setenv("WATCHDOG_USEC", "60000000")
    assert sd.watchdog_period() == 60.0


def test_watchdog_period_for_our_pid(no_watchdog):
    no_watchdog.setenv("WATCHDOG_USEC", "1500000")
    no_watchdog.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sd.watchdog_period() == 1.5


def test_watchdog_for_another_pid_is_not_ours(no_watchdog):
    no_watchdog.setenv("WATCHDOG_USEC", "60000000")
    no_watchdog.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sd.watchdog_period() is None


@pytest.mark.parametrize("usec, pid", [("0", None), ("-5", None), ("soon", None), ("60", "x")])
def test_watchdog_invalid_values_mean_disabled(no_watchdog, usec, pid):
    no_watchdog.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        no_watchdog.setenv("WATCHDOG_PID", pid)
    assert sd.watchdog_period() is None


# --- the unit file --------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as lists of (key, value); repeated keys are kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"directive outside a section: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text())


def values(unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def one(unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= expected once, found {found}"
    return found[0]


def test_unit_service_basics(unit):
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart") == (f"{EXEC_START} run --config /etc/kiosk/kiosk.toml")
    assert one(unit, "Service", "ExecReload") == "/opt/kiosk/venv/bin/python -m kiosk.systemd reload $MAINPID"
    assert one(unit, "Service", "RuntimeDirectory") == "kiosk"
    assert one(unit, "Service", "WatchdogSec") == "60"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec") == "5"
    assert one(unit, "Service", "TimeoutStopSec")
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_unit_start_limit_stops_a_permanent_failure(unit):
    # 5 starts in 10 minutes: with RestartSec=5 a permanent failure stops after ~25 s
    # instead of restarting for ever (the system test sees it stop at the limit).
    interval = int(one(unit, "Unit", "StartLimitIntervalSec"))
    burst = int(one(unit, "Unit", "StartLimitBurst"))
    restart_sec = int(one(unit, "Service", "RestartSec"))
    assert burst >= 3, "a crash now and then must not hit the limit"
    assert interval > burst * restart_sec, "restarts would never reach the limit"
    assert not values(unit, "Service", "StartLimitIntervalSec"), "[Service] ignores it on 252"


def test_unit_identity_and_state(unit):
    assert one(unit, "Service", "User") == "kiosk"
    assert one(unit, "Service", "Group") == "kiosk"
    assert not values(unit, "Service", "DynamicUser"), "static user so the CLI can read the db"
    groups = " ".join(values(unit, "Service", "SupplementaryGroups")).split()
    assert {"gpio", "dialout"} <= set(groups)
    assert one(unit, "Service", "StateDirectory") == "kiosk"
    assert one(unit, "Service", "WorkingDirectory") == "/var/lib/kiosk"
    assert one(unit, "Service", "UMask") == "0007"


def test_unit_environment(unit):
    env = dict(item.split("=", 1) for line in values(unit, "Service", "Environment") for item in line.split())
    assert env["GPIOZERO_PIN_FACTORY"] == "lgpio"
    assert env["LG_WD"] == "/var/lib/kiosk"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_unit_device_access(unit):
    # PrivateDevices=yes would hide /dev/gpiochip* and the serial ports.
    assert values(unit, "Service", "PrivateDevices") in ([], ["no"])
    assert one(unit, "Service", "DevicePolicy") == "closed"
    allowed = {v.split()[0] for v in values(unit, "Service", "DeviceAllow")}
    assert {"char-gpiochip", "char-ttyUSB", "char-ttyACM", "char-ttyAMA"} <= allowed


def test_unit_keeps_proc_readable_for_gpiozero(unit):
    # gpiozero's lgpio factory reads the board revision from /proc/device-tree or
    # /proc/cpuinfo, which ProcSubset=pid hides.
    assert values(unit, "Service", "ProcSubset") in ([], ["all"])


def test_unit_every_directive_is_commented():
    previous = ""
    for number, raw in enumerate(UNIT.read_text().splitlines(), 1):
        line = raw.strip()
        if line and line[0] not in "#;[":
            assert previous.startswith("#"), f"line {number} has no comment above it: {raw!r}"
        if line:
            previous = line


def run_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env=SYSTEMD_ENV, timeout=120, check=False
    )


def test_unit_security_exposure():
    result = run_analyze("security", "--no-pager", "--offline=true", os.fspath(UNIT))
    output = result.stdout + result.stderr
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (needs systemd >= 250)")
    match = re.search(r"Overall exposure level for \S+:\s*([0-9.]+)", output)
    assert match, f"no exposure level in the output (rc={result.returncode}):\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"


def test_unit_verify_is_clean(tmp_path):
    # verify checks that ExecStart= exists; /opt/kiosk/venv only exists on an
    # installed Pi, so verify a copy whose ExecStart binary is one that exists
    # everywhere.  Everything else (keys, values, dependencies) is unchanged.
    stand_in = "/bin/true" if os.access("/bin/true", os.X_OK) else sys.executable
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START} " in text
    copy = tmp_path / "kiosk.service"  # verify derives the unit name from the file name
    copy.write_text(text.replace(f"ExecStart={EXEC_START} ", f"ExecStart={stand_in} ")
                    .replace("ExecReload=/opt/kiosk/venv/bin/python ", f"ExecReload={stand_in} "))
    result = run_analyze("verify", os.fspath(copy))
    output = result.stdout + result.stderr
    # verify exits 0 for unknown keys and bad values too, and only warns: clean = silent.
    assert result.returncode == 0, output
    assert output.strip() == "", f"systemd-analyze verify is not clean:\n{output}"


def test_unit_verify_only_misses_the_venv():
    # The pristine file: the only thing verify may complain about is the venv
    # binary that install.sh creates (documents how verify treats it).
    result = run_analyze("verify", os.fspath(UNIT))
    output = (result.stdout + result.stderr).strip()
    if os.access(EXEC_START, os.X_OK):
        assert result.returncode == 0 and output == "", output
    else:
        # systemd 252: "kiosk.service: Command /opt/kiosk/venv/bin/kiosk is not
        # executable: No such file or directory", and nothing else.
        assert result.returncode != 0
        lines = output.splitlines()
        assert lines, "verify accepted a missing ExecStart binary"
        assert all("/opt/kiosk/venv/bin/" in line and "not executable" in line for line in lines), output


# --- install.sh -----------------------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
# Stands in for "python3 -m venv [...] DIR": makes DIR/bin/python (logs pip
# calls), DIR/pyvenv.cfg (this Python's version) and DIR/bin/kiosk (check-config
# passes if the file says "valid").  "-c CODE" runs the real python3.
if [ "$1" = -c ]; then exec python3 "$@"; fi
for last; do :; done
mkdir -p "$last/bin"
rm -f "$last/bin/python" "$last/bin/kiosk"
python3 -c 'import sys; print("home = /usr/bin\\nversion = %d.%d.%d" % sys.version_info[:3])' \
    > "$last/pyvenv.cfg"
printf '#!/bin/sh\\necho "$*" >> "%s/pip.log"\\n' "$last" > "$last/bin/python"
printf '#!/bin/sh\\n[ "$1" = check-config ] && grep -q valid "$2" && exit 0\\n\
echo "$2: [gpio] pin: expected int" >&2; exit 1\\n' > "$last/bin/kiosk"
chmod +x "$last/bin/python" "$last/bin/kiosk"
"""


@pytest.fixture
def source_tree(tmp_path) -> Path:
    """A copy of install.sh and the unit in a minimal source tree of its own."""
    repo = tmp_path / "src"
    (repo / "systemd").mkdir(parents=True)
    (repo / "config").mkdir()
    (repo / "docs").mkdir()
    shutil.copy2(INSTALL_SH, repo / "systemd" / "install.sh")
    shutil.copy2(UNIT, repo / "systemd" / "kiosk.service")
    (repo / "pyproject.toml").write_text('[project]\nname = "kiosk"\n')
    (repo / "config" / "kiosk.example.toml").write_text("# example, valid\n")
    (repo / "docs" / "install.md").write_text("# Install\n")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return repo


@pytest.fixture
def stage(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def install(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    env = {**os.environ, "PYTHON": os.fspath(repo.parent / "fake-python")}
    env.pop("DESTDIR", None)
    return subprocess.run(
        [bash, os.fspath(repo / "systemd" / "install.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path below root: its mode and its content hash or symlink target."""
    tree = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            digest = "-> " + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = ""
        tree[os.fspath(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), digest)
    return tree


def test_install_sh_syntax():
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    subprocess.run(["bash", "-n", os.fspath(INSTALL_SH)], check=True)


def test_install_sh_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    scripts = [INSTALL_SH, *sorted((REPO / "tests" / "system").glob("*.sh")), REPO / ".ci" / "run"]
    result = subprocess.run(
        ["shellcheck", "--external-sources", *map(os.fspath, scripts)], cwd=REPO,
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_sh_is_executable_and_strict():
    assert os.access(INSTALL_SH, os.X_OK)
    assert "set -euo pipefail" in INSTALL_SH.read_text()


def test_install_help(source_tree):
    result = install(source_tree, "--help")
    assert result.returncode == 0
    for option in ("--no-apt", "--no-start", "--dry-run", "--prefix", "--etc", "--root"):
        assert option in result.stdout


def test_install_rejects_unknown_option(source_tree):
    result = install(source_tree, "--frobnicate")
    assert result.returncode != 0
    assert "unknown option: --frobnicate" in result.stderr


def test_install_needs_root(tmp_path):
    # A world-readable copy: as root we drop to nobody, who cannot enter tmp_path.
    public = Path(tempfile.mkdtemp(prefix="kiosk-install-"))
    try:
        public.chmod(0o755)
        script = public / "install.sh"
        shutil.copy2(INSTALL_SH, script)
        cmd = ["bash", os.fspath(script), "--no-apt", "--no-start"]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("running as root and setpriv is not available to drop privileges")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd="/")
    finally:
        shutil.rmtree(public)
    assert result.returncode == 1
    assert "must be run as root" in result.stderr


def test_dry_run_changes_nothing_and_keeps_existing_config(source_tree, stage):
    config = stage / "etc" / "kiosk" / "kiosk.toml"
    config.parent.mkdir(parents=True)
    config.write_text("# my site config, valid\n")
    before = snapshot(stage)
    result = install(source_tree, "--dry-run", "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 0, result.stderr
    assert snapshot(stage) == before
    assert "keeping the existing configuration" in result.stdout
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands, result.stdout
    assert not [c for c in commands if c.endswith("kiosk.toml") and c.startswith("+ install")]
    assert any("-m venv --system-site-packages" in c for c in commands)
    assert any("check-config" in c for c in commands)
    assert not any(c.startswith(("+ apt-get", "+ systemctl")) for c in commands)


def test_dry_run_without_config_would_install_the_example(source_tree, stage):
    result = install(source_tree, "--dry-run", "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 0, result.stderr
    assert snapshot(stage) == {}
    assert re.search(
        r"^\+ install -m 0640 \S+kiosk\.example\.toml \S+/etc/kiosk/kiosk\.toml$",
        result.stdout,
        re.M,
    ), result.stdout


def test_dry_run_on_this_system_prints_apt_accounts_and_systemctl(source_tree):
    # Without --root the plan covers the real system; --dry-run only reads it.
    result = install(source_tree, "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Raspberry Pi OS: apt installs python3-lgpio; plain Debian (this machine) has none.
    assert ("+ apt-get install -y" in out and "python3-lgpio" in out) or (
        "python3-lgpio is not available from apt here" in out and "lgpio will come from PyPI" in out
    ), out
    assert "is running" not in out and "enabled " not in out, "a dry run must not claim results"
    assert out.rstrip().endswith("dry run: nothing was changed")
    assert "+ useradd --system" in out or "user kiosk exists" in out
    assert "/opt/kiosk/venv" in out
    assert "+ systemctl enable kiosk.service" in out


def test_staged_install_layout(source_tree, stage):
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 0, result.stdout + result.stderr
    tree = snapshot(stage)
    assert tree["etc/kiosk"][0] == 0o750
    assert tree["etc/kiosk/kiosk.toml"][0] == 0o640
    assert tree["etc/systemd/system/kiosk.service"][0] == 0o644
    assert (stage / "etc/kiosk/kiosk.toml").read_text() == "# example, valid\n"
    assert (stage / "etc/systemd/system/kiosk.service").read_text() == UNIT.read_text()
    assert (stage / "opt/kiosk/doc/install.md").exists()
    assert os.readlink(stage / "usr/local/bin/kiosk") == "/opt/kiosk/venv/bin/kiosk"
    pip_log = (stage / "opt/kiosk/venv/pip.log").read_text()
    installs = [line for line in pip_log.splitlines() if line.startswith("-m pip install")]
    assert installs, pip_log
    # Built from a temporary copy, never from the clone itself.
    assert not any(os.fspath(source_tree) in line for line in installs), installs
    assert re.search(r"/kiosk-install\.\w+/src$", installs[0]), installs


def test_staged_install_is_idempotent_and_never_overwrites_config(source_tree, stage):
    args = ("--no-apt", "--no-start", "--root", os.fspath(stage))
    assert install(source_tree, *args).returncode == 0
    config = stage / "etc/kiosk/kiosk.toml"
    config.write_text("# edited on site, still valid\n")
    before = snapshot(stage)
    result = install(source_tree, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "keeping the existing configuration" in result.stdout
    assert "reusing the venv" in result.stdout
    assert "already installed from these sources; not reinstalling" in result.stdout
    assert "is up to date" in result.stdout
    after = snapshot(stage)
    pip_log = after.pop("opt/kiosk/venv/pip.log")  # read-only queries are logged too
    before.pop("opt/kiosk/venv/pip.log")
    assert after == before
    assert "install" not in (stage / "opt/kiosk/venv/pip.log").read_text().split("--version")[-1], pip_log
    assert config.read_text() == "# edited on site, still valid\n"


def test_staged_install_fails_loudly_on_invalid_config(source_tree, stage):
    config = stage / "etc/kiosk/kiosk.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[gpio]\npin = 'x'\n")
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 1
    assert "[gpio] pin: expected int" in result.stderr
    assert "is not valid" in result.stderr
    assert not (stage / "etc/systemd/system/kiosk.service").exists(), "unit installed anyway"
    assert config.read_text() == "[gpio]\npin = 'x'\n"


def test_staged_install_with_custom_prefix_and_etc(source_tree, stage):
    result = install(
        source_tree,
        "--no-apt",
        "--no-start",
        "--root",
        os.fspath(stage),
        "--prefix",
        "/srv/kiosk",
        "--etc=/etc/counter",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (stage / "etc/counter/kiosk.toml").exists()
    assert (stage / "srv/kiosk/venv/bin/kiosk").exists()
    unit = parse_unit((stage / "etc/systemd/system/kiosk.service").read_text())
    assert one(unit, "Service", "ExecStart") == (
        "/srv/kiosk/venv/bin/kiosk run --config /etc/counter/kiosk.toml"
    )


def test_install_refuses_odd_paths(source_tree, stage):
    result = install(source_tree, "--dry-run", "--root", os.fspath(stage), "--prefix", "opt/x")
    assert result.returncode == 1
    assert "paths must be absolute" in result.stderr


def test_install_leaves_the_clone_as_it_was(source_tree, stage):
    # pip used to build in the clone as root: root-owned build/ and kiosk.egg-info.
    (source_tree / "kiosk").mkdir()
    (source_tree / "kiosk" / "__init__.py").write_text('__version__ = "0"\n')
    before = snapshot(source_tree)
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(source_tree) == before


def test_install_rebuilds_the_venv_for_a_new_python(source_tree, stage):
    # Bookworm -> Trixie: the venv was made by Python 3.11, the system's is now another.
    venv = stage / "opt/kiosk/venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.9.2\n")
    (venv / "bin" / "python").symlink_to(sys.executable)  # runs, but is not the venv's Python
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 0, result.stdout + result.stderr
    current = "{}.{}".format(*sys.version_info[:2])
    assert (f"rebuild the venv in {venv}: it was made for Python 3.9, "
            f"the system's Python is now {current}") in result.stdout
    assert f"version = {current}." in (venv / "pyvenv.cfg").read_text()
    assert "reusing the venv" not in result.stdout


def test_install_wheelhouse_must_hold_wheels(source_tree, stage, tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = install(source_tree, "--no-apt", "--root", os.fspath(stage), "--wheelhouse", os.fspath(empty))
    assert result.returncode == 1
    assert f"no wheels in {empty} (make one with: make wheelhouse)" in result.stderr
    result = install(source_tree, "--root", os.fspath(stage), "--wheelhouse", os.fspath(tmp_path / "nope"))
    assert result.returncode == 1 and "--wheelhouse directory does not exist" in result.stderr


def test_install_with_wheelhouse_uses_no_index(source_tree, stage, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "click-8.1.7-py3-none-any.whl").write_bytes(b"")
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage),
                     "--wheelhouse", os.fspath(wheels))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"offline install: Python packages come only from {wheels}" in result.stdout
    installs = [line for line in (stage / "opt/kiosk/venv/pip.log").read_text().splitlines()
                if line.startswith("-m pip install")]
    assert installs and all(f"--no-index --find-links {wheels}" in line for line in installs), installs


def test_install_says_where_the_token_goes(source_tree, stage):
    config = stage / "etc/kiosk/kiosk.toml"
    config.parent.mkdir(parents=True)
    config.write_text('# valid\n[upload]\nurl = "https://example.org/x"\ntoken_file = "/etc/kiosk/token"\n')
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "It goes in /etc/kiosk/token" in result.stdout
    assert "sudoedit /etc/kiosk/token" in result.stdout
    (stage / "etc/kiosk/token").write_text("secret\n")
    result = install(source_tree, "--no-apt", "--no-start", "--root", os.fspath(stage))
    assert "It goes in" not in result.stdout, "the token is there: no hint"


# --- reload: RELOADING=1 / READY=1 around the real reload, and ExecReload waits ------


def test_reloading_sends_monotonic_usec(notify_socket):
    import time

    before = time.monotonic_ns() // 1000
    assert sd.reloading() is True
    lines = dict(line.split("=", 1) for line in received(notify_socket).splitlines())
    assert lines["RELOADING"] == "1"
    assert before <= int(lines["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000


def test_reloaded_marks_the_runtime_directory(notify_socket, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", os.fspath(tmp_path))
    assert sd.reloaded(None, "counting on 1 of 1 sensor") is True
    assert received(notify_socket) == "READY=1\nSTATUS=counting on 1 of 1 sensor"
    first = (tmp_path / sd.RELOAD_MARK).read_text().split()
    sd.reloaded("config reload failed:\nbad pin")
    second = (tmp_path / sd.RELOAD_MARK).read_text().rstrip("\n").split(" ", 2)
    assert first[0] == second[0] == str(os.getpid())
    assert int(second[1]) == int(first[1]) + 1
    assert second[2] == "failed: config reload failed: bad pin"


def test_reload_helper_waits_for_the_daemons_reload(tmp_path, daemon):
    """``python -m kiosk.systemd reload PID`` (the unit's ExecReload) returns only after
    the daemon has reloaded: RELOADING=1 and READY=1 have both reached systemd's socket
    by then, and the new config is in effect; a refused config makes it fail."""
    from tests.conftest import simulated_sensor, wait_for, write_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = write_config(tmp_path, simulated_sensor("sim-a", seed=1))
    d = daemon(config, env={"RUNTIME_DIRECTORY": os.fspath(run_dir)})
    d.wait_ready()
    d.notify.messages.clear()
    env = {**os.environ, "RUNTIME_DIRECTORY": os.fspath(run_dir)}

    def helper() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kiosk.systemd", "reload", str(d.proc.pid)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False)

    write_config(tmp_path, simulated_sensor("sim-a", seed=1) + simulated_sensor("sim-b", seed=2))
    result = helper()
    assert result.returncode == 0, result.stderr
    messages = d.notify.poll()
    reloading = [i for i, m in enumerate(messages) if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
    ready = [i for i, m in enumerate(messages) if m.startswith("READY=1")]
    assert reloading and ready and reloading[0] < ready[-1], messages
    assert "counting on 2 of 2 sensors" in messages[ready[-1]], messages
    wait_for(lambda: "started sim-b" in d.output(), what="the reload in the daemon's log")

    (tmp_path / "kiosk.toml").write_text("[device]\nid = 'x'\n")  # broken: refused, old one kept
    result = helper()
    assert result.returncode == 1
    assert "kiosk reload: config reload failed, keeping the running config" in result.stderr
    assert d.proc.poll() is None, "a refused reload must not stop the daemon"
    assert d.terminate() == 0


def test_reload_helper_reports_a_daemon_that_never_answers(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])  # SIGHUP kills it: "exited during the reload"
    try:
        error = sd.reload_and_wait(sleeper.pid, directory=os.fspath(tmp_path), timeout=10)
        assert error == f"the daemon (pid {sleeper.pid}) exited during the reload" or "did not" in error
    finally:
        sleeper.kill()
        sleeper.wait()
    ignorer = subprocess.Popen([sys.executable, "-c",
                                "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                                "print('ok', flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        assert ignorer.stdout is not None and ignorer.stdout.readline() == b"ok\n"
        error = sd.reload_and_wait(ignorer.pid, directory=os.fspath(tmp_path), timeout=0.5)
        assert error == f"the daemon (pid {ignorer.pid}) did not finish reloading within 0.5 s"
    finally:
        ignorer.kill()
        ignorer.wait()


def test_reload_helper_usage():
    result = subprocess.run([sys.executable, "-m", "kiosk.systemd", "reload", "x"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "usage: python -m kiosk.systemd reload MAINPID" in result.stderr


def test_a_failing_start_leaves_its_error_in_status(tmp_path):
    """systemctl status keeps STATUS= after the service failed: the reason stays visible."""
    sock_path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.fspath(sock_path))
    sock.settimeout(10)
    config = tmp_path / "kiosk.toml"
    config.write_text("[storage]\nflush_interval_s = 'often'\n")
    try:
        result = subprocess.run([sys.executable, "-m", "kiosk", "run", "--config", os.fspath(config)],
                                cwd=REPO, env={**os.environ, "NOTIFY_SOCKET": os.fspath(sock_path)},
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        message = received(sock)
    finally:
        sock.close()
    assert message.startswith(f"STATUS=failed: {config}: "), message
    assert "\n" not in message


def test_install_without_an_lgpio_wheel_warns_and_carries_on(source_tree, stage):
    # Plain Debian on armv7l, or Python 3.13: no python3-lgpio in apt and no lgpio wheel.
    args = ("--no-apt", "--no-start", "--root", os.fspath(stage))
    assert install(source_tree, *args).returncode == 0
    python = stage / "opt/kiosk/venv/bin/python"
    log = stage / "opt/kiosk/venv/pip.log"
    python.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n'
                      'case "$*" in *lgpio*) exit 1 ;; esac\nexit 0\n')
    result = install(source_tree, *args)
    if "python3-lgpio is not available from apt here" not in result.stdout:
        pytest.skip("this machine's apt has python3-lgpio")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already installed from these sources; not reinstalling" in result.stdout
    assert "warning: no lgpio wheel for Python" in result.stdout
    assert "sudo apt install python3-lgpio" in result.stdout
    assert "(serial and simulated sensors work)" in result.stdout


@pytest.mark.parametrize("required, rc, word", [("", 0, "SKIPPED"), ("required", 1, "FAILED")])
def test_system_test_says_why_it_cannot_run(tmp_path, required, rc, word):
    """Without root, make test-system says why and skips; CI (required) fails instead."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv is not available to drop privileges")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    result = subprocess.run([*prefix, "bash", os.fspath(REPO / "tests/system/run.sh"),
                             "--wheelhouse", os.fspath(tmp_path)],
                            env={**os.environ, "KIOSK_SYSTEM_TEST": required}, cwd="/",
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == rc, result.stderr
    assert f"test-system: {word}" in result.stderr and "not running as root" in result.stderr


@pytest.mark.parametrize("os_name, lgpio_candidate", [("Raspberry Pi OS", "0.2.2-1~rpt1"), ("Debian", "")])
def test_install_takes_lgpio_from_apt_where_the_archive_has_it(source_tree, stage, tmp_path,
                                                               os_name, lgpio_candidate):
    """Raspberry Pi OS's archive has python3-lgpio (apt installs it); Debian's has not (a wheel)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "dpkg-query").write_text(
        '#!/bin/sh\nfor p; do :; done\n[ "$p" = python3-venv ] && printf "install ok installed"\nexit 0\n')
    candidate = f"  Candidate: {lgpio_candidate}" if lgpio_candidate else ""
    (fake_bin / "apt-cache").write_text(
        f'#!/bin/sh\n[ "$2" = python3-lgpio ] && [ -n "{candidate}" ] && echo "python3-lgpio:" '
        f'&& echo "{candidate}"\nexit 0\n')
    for tool in ("dpkg-query", "apt-cache"):
        (fake_bin / tool).chmod(0o755)
    bash = shutil.which("bash")
    assert bash
    env = {**os.environ, "PYTHON": os.fspath(source_tree.parent / "fake-python"),
           "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    result = subprocess.run([bash, os.fspath(source_tree / "systemd/install.sh"), "--dry-run",
                             "--root", os.fspath(stage)], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    if lgpio_candidate:
        assert "+ apt-get install -y python3-lgpio" in result.stdout, os_name
        assert "lgpio>=0.2" not in result.stdout, "apt's lgpio, never pip's"
    else:
        assert "python3-lgpio is not available from apt here" in result.stdout
        assert "+ apt-get" not in result.stdout
        assert re.search(r"^\+ .*-m pip install .*lgpio\\>=0\.2$", result.stdout, re.M), result.stdout


def test_a_notify_socket_nobody_reads_never_blocks(tmp_path, monkeypatch):
    """systemd busy or hung (here: a socket nobody reads): once it is full, a notification
    is dropped after NOTIFY_TIMEOUT_S instead of stalling the daemon's loop."""
    import socket as socket_mod
    import time as time_mod

    from kiosk import systemd as sd

    path = tmp_path / "full.sock"
    with socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        results = []
        t0 = time_mod.monotonic()
        for _ in range(3000):
            results.append(sd.status("x" * 200))
            if not results[-1]:
                break
        assert results[0] and not results[-1], "the socket never filled up"
        took = time_mod.monotonic() - t0
        t1 = time_mod.monotonic()
        assert sd.watchdog_ping() is False
        assert time_mod.monotonic() - t1 < 2.0  # bounded by NOTIFY_TIMEOUT_S, not forever
        assert took < 60
