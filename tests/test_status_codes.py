"""``kiosk status`` for monitoring: a distinct exit status for each state (real processes,
real databases, the daemon's own records), and output that fits the terminal."""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from kiosk.status import StatusCode
from kiosk.store import Store
from kiosk.store.counts import SensorRow
from kiosk.store.health import HealthFile
from tests.conftest import ROOT

LONG = ("cannot open /dev/ttyUSB0: [Errno 2] No such file or directory; the counter is "
        "unplugged or the cable is loose; retrying every 5 s with backoff up to 60 s; "
        "check `ls -l /dev/serial/by-id/` and the [[sensors]] port in the config") * 2


def kiosk(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KIOSK_CONFIG", "COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "kiosk", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, env=env)


def on_terminal(*args: str, columns: int) -> str:
    """What ``kiosk`` prints on a real terminal (a pty) ``columns`` wide."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("KIOSK_CONFIG", "COLUMNS", "LINES")}
    p = subprocess.Popen([sys.executable, "-m", "kiosk", *args], stdout=slave,
                         stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    try:
        while data := os.read(master, 65536):
            chunks.append(data)
    except OSError:  # EIO: the other side closed
        pass
    finally:
        os.close(master)
    p.wait(timeout=60)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def daemon_db(path: Path, *, last_seen_ago: float = 1.0, stopped: bool = False,
              sensor_state: str = "ok", message: str | None = None,
              paused: bool = False) -> Path:
    """A database as a running daemon (this test process stands in for its pid) leaves it."""
    now = time.time()
    with Store.open(path) as store:
        run = store.start_run(now=now - 3600, pid=os.getpid(), version="t")
        with store.write() as conn:
            conn.execute("UPDATE runs SET last_seen = ? WHERE id = ?", (now - last_seen_ago, run))
        if stopped:
            store.end_run(run, now=now - last_seen_ago, reason="SIGTERM")
        store.set_meta(daemon={"pid": os.getpid(), "version": "t", "speed": 1, "heartbeat_s": 30,
                               "started_at": now - 3600, "flush_interval_s": 1, "queue_depth": 0})
        store.write_batch(now=now - last_seen_ago, counts={("door", int(now // 900 * 900)): [5, 2]},
                          sensors=[SensorRow("door", "serial", sensor_state, now - 60, now - 70,
                                             0, message)])
        if paused:
            store.set_meta(upload={"paused": True, "last_error": "HTTP 401: token refused",
                                   "last_error_at": now - 100})
    return path


@pytest.mark.parametrize(("state", "make", "code", "shown"), [
    ("all well", {}, StatusCode.OK, "health:   all well (exit status 0)"),
    ("stopped", {"stopped": True}, StatusCode.STOPPED, "daemon:   STOPPED"),
    ("stalled", {"last_seen_ago": 600}, StatusCode.STALLED, "daemon:   STALLED"),
    ("sensor down", {"sensor_state": "down", "message": "cannot open /dev/ttyUSB0"},
     StatusCode.SENSOR_FAULT, "sensor door down"),
    ("sensor stuck", {"sensor_state": "stuck"}, StatusCode.SENSOR_FAULT, "sensor door stuck"),
    ("uploads paused", {"paused": True}, StatusCode.UPLOADS_PAUSED, "uploads:  PAUSED"),
    ("stopped and paused", {"stopped": True, "paused": True}, StatusCode.STOPPED,
     "daemon stopped; uploads paused"),
])
def test_each_state_has_its_exit_status(tmp_path, state, make, code, shown):
    db = daemon_db(tmp_path / "counts.db", **make)
    r = kiosk("status", "--db", str(db))
    assert r.returncode == code, f"{state}: {r.returncode}\n{r.stdout}{r.stderr}"
    assert shown in r.stdout, r.stdout
    info = json.loads(kiosk("status", "--db", str(db), "--json").stdout)
    assert info["health"]["exit_code"] == code


def test_writes_failing_has_its_own_exit_status(tmp_path):
    db = daemon_db(tmp_path / "counts.db")
    health = HealthFile(str(db))
    health.write({"writes_failing": {"pid": os.getpid(), "since": time.time() - 30,
                                     "error": "database or disk is full",
                                     "held": {"visitors_in": 7, "visitors_out": 1},
                                     "updated_at": time.time()}})
    health.close()
    r = kiosk("status", "--db", str(db))
    assert r.returncode == StatusCode.WRITES_FAILING == 5, r.stdout
    assert "WRITES FAIL" in r.stdout and "7 in, 1 out held in memory" in r.stdout


def test_a_stopped_daemon_shows_no_next_attempt(tmp_path):
    db = daemon_db(tmp_path / "counts.db", stopped=True)
    with Store.open(db) as store:
        store.set_meta(upload={"next_attempt_at": time.time() + 300})
    out = kiosk("status", "--db", str(db)).stdout
    assert "next attempt" not in out and "no attempts while the daemon is stopped" in out


def test_a_write_in_the_future_is_not_a_negative_age(tmp_path):
    db = daemon_db(tmp_path / "counts.db", last_seen_ago=-120)  # the clock was set back
    r = kiosk("status", "--db", str(db), "--json")
    assert json.loads(r.stdout)["daemon"]["last_write_age_s"] == 0


def test_output_fits_the_terminal_and_json_keeps_it_whole(tmp_path):
    db = daemon_db(tmp_path / "counts.db", sensor_state="down", message=LONG)
    for columns in (80, 120):
        out = on_terminal("status", "--db", str(db), columns=columns)
        # every line fits, but for one that is a single word (a path stays whole, to copy)
        wide = [x for x in out.splitlines() if len(x) > columns and len(x.split()) > 1]
        assert not wide, out
        assert "…" in out and "cannot open /dev/ttyUSB0" in out
    info = json.loads(on_terminal("status", "--db", str(db), "--json", columns=80))
    assert info["sensors"][0]["message"] == LONG
    piped = kiosk("status", "--db", str(db)).stdout  # a pipe gets whole lines
    assert LONG in piped


def test_exit_codes_are_documented():
    r = kiosk("status", "--help")
    for code in StatusCode:
        assert f"  {int(code)}  " in r.stdout, (code, r.stdout)
    readme = (ROOT / "README.md").read_text()
    assert "| 7 |" in readme and "uploads are paused" in readme
