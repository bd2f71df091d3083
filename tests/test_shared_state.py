"""The state directory shared by the service user and group ``kiosk``, with real uids.

The unit runs the daemon as user kiosk, group kiosk, ``UMask=0007``, in a
``StateDirectory`` of mode 2770 (setgid: every file made in it belongs to group kiosk).
Staff in group kiosk run ``kiosk status``.  Whatever order these happen in, the daemon
must still be able to open its database, and a reader must never create files.

Runs as root only (``setpriv`` switches to numeric uids without passwd entries).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.conftest import config_text, db_totals, simulated_sensor, wait_for

ROOT = Path(__file__).resolve().parent.parent
# This interpreter's site-packages (the venv's): other uids import the dependencies from it.
# (Not "a sys.path entry without 'kiosk' in it": a clone in ~/kiosk has that in every path.)
SITE = Path(sysconfig.get_paths()["purelib"])


def _python_for_others() -> str | None:
    """An interpreter other uids may run: this one, unless it lives in a private home
    (pyenv under /root), else the system's python3 of the same minor version."""
    for cand in (sys.executable, "/usr/bin/python3"):
        real = Path(cand).resolve()
        if all(os.stat(d).st_mode & 0o001 for d in real.parents) and os.stat(real).st_mode & 0o001:
            r = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
            if r.stdout.strip() == str(tuple(sys.version_info[:2])):
                return cand
    return None


PYTHON = _python_for_others() if os.geteuid() == 0 else None
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or PYTHON is None,
    reason="needs root, setpriv and a python3 that other uids can run")

DAEMON_UID, KIOSK_GID, STAFF_UID, OUTSIDER_UID = 61001, 61002, 61003, 61004


def as_user(uid: int, gid: int, groups: list[int], umask: str, *argv: str) -> list[str]:
    """``argv`` run as ``uid``/``gid`` with supplementary ``groups`` and ``umask``."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}",
            "--groups=" + ",".join(map(str, groups)) if groups else "--clear-groups",
            "--", "sh", "-c", f'umask {umask}; exec "$@"', "sh", *argv]


# the project and its dependencies from the venv (pure Python), for the other uids too
KIOSK = ["env", f"PYTHONPATH={ROOT}:{SITE}", str(PYTHON), "-m", "kiosk"]


@pytest.fixture
def state_dir():
    """A world-traversable scratch dir holding ``state/`` (root:61002, mode 2770) and a config."""
    top = Path(tempfile.mkdtemp(prefix="kiosk-shared-", dir="/tmp"))
    top.chmod(0o755)
    state = top / "state"
    state.mkdir()
    os.chown(state, DAEMON_UID, KIOSK_GID)
    state.chmod(0o2770)
    cfg = top / "kiosk.toml"
    cfg.write_text(config_text(state / "counts.db", simulated_sensor(
        "sim", weekday_visits=200000, weekend_visits=200000,
        weekday_hours="00:00-23:59", weekend_hours="00:00-23:59", seed=7), flush=0.2))
    cfg.chmod(0o644)
    yield state, cfg
    shutil.rmtree(top, ignore_errors=True)


def counted(db: Path) -> int:
    """Visits in ``db`` so far (0 while the daemon is still creating it)."""
    try:
        return db_totals(db)[0] if db.exists() else 0
    except sqlite3.OperationalError:
        return 0


def start_daemon(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen(
        as_user(DAEMON_UID, KIOSK_GID, [KIOSK_GID], "0007", *KIOSK, "run", "--config", str(cfg),
                "--speed", "50"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")


def stop_daemon(p: subprocess.Popen) -> str:
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return err


def staff(argv: list[str], uid: int = STAFF_UID, groups: list[int] | None = None,
          umask: str = "0022") -> subprocess.CompletedProcess:
    groups = [KIOSK_GID] if groups is None else groups
    return subprocess.run(as_user(uid, uid, groups, umask, *KIOSK, *argv), capture_output=True,
                          text=True, timeout=60, cwd="/")


def test_staff_status_while_stopped_creates_nothing_and_the_daemon_starts(state_dir):
    state, cfg = state_dir
    db = state / "counts.db"
    p = start_daemon(cfg)
    wait_for(lambda: counted(db) > 0, timeout=30, what="first counts")
    stop_daemon(p)
    before = sorted(os.listdir(state))
    # a clean stop leaves no -wal/-shm; the health file stays (empty unless writes failed)
    assert before == ["counts.db", "counts.db.health", "counts.db.reserve"]
    assert os.stat(db).st_gid == KIOSK_GID and os.stat(db).st_mode & 0o777 == 0o660
    health = state / "counts.db.health"
    assert os.stat(health).st_gid == KIOSK_GID and os.stat(health).st_mode & 0o777 == 0o660

    r = staff(["status", "--db", str(db)])
    assert r.returncode == 3, r.stderr  # the daemon is stopped (StatusCode.STOPPED)
    assert "sim" in r.stdout
    assert sorted(os.listdir(state)) == before, "the reader created files"

    before_restart = counted(db)
    p = start_daemon(cfg)  # the daemon still owns its database
    wait_for(lambda: counted(db) > before_restart, timeout=30, what="counting after restart")
    # a reader beside the running daemon uses the daemon's -wal/-shm (group kiosk, 0660)
    r = staff(["status", "--db", str(db)])
    assert r.returncode == 0, r.stderr
    for name in os.listdir(state):
        st = os.stat(state / name)
        assert st.st_uid == DAEMON_UID and st.st_gid == KIOSK_GID, name
    stop_daemon(p)
    before_restart = counted(db)
    p = start_daemon(cfg)  # and once more after the reader
    # counting again, not a fixed sleep: under qemu (arm64) a SIGTERM after 0.5 s came
    # before the daemon had set its signal handlers
    wait_for(lambda: counted(db) > before_restart, timeout=30, what="counting after the reader")
    assert p.poll() is None
    stop_daemon(p)


def test_a_user_outside_the_group_gets_one_line(state_dir):
    state, cfg = state_dir
    db = state / "counts.db"
    p = start_daemon(cfg)
    wait_for(lambda: counted(db) > 0, timeout=30, what="first counts")
    stop_daemon(p)
    r = staff(["status", "--db", str(db)], uid=OUTSIDER_UID, groups=[])
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kiosk: error: "), r.stderr
    assert "group kiosk" in lines[0] or "permission" in lines[0].lower()
    assert sorted(os.listdir(state)) == ["counts.db", "counts.db.health", "counts.db.reserve"]
