"""The daemon as a real process: signals, kill -9, concurrent readers."""

from __future__ import annotations

import random
import signal
import sqlite3
import time

import pytest

from tests.conftest import SERIAL_SENSOR, db_totals, integrity, wait_for

SERIAL = SERIAL_SENSOR


def _serial_config(config_file, pty_feeder, flush: float = 1.0):
    return config_file(SERIAL.format(port=pty_feeder.link), flush=flush)


def test_sigterm_loses_nothing(config_file, daemon, pty_feeder, tmp_path):
    cfg = _serial_config(config_file, pty_feeder, flush=2.0)
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.start(rate=500)
    time.sleep(1.5)  # less than one flush interval after the last flush: much is in memory
    injected = pty_feeder.stop()
    assert d.terminate(signal.SIGTERM) == 0, d.output()
    assert db_totals(tmp_path / "counts.db") == (injected, 0), d.output()
    assert integrity(tmp_path / "counts.db") == "ok"
    assert "STOPPING=1" in "".join(d.notify.poll())


def test_ctrl_c_loses_nothing(config_file, daemon, pty_feeder, tmp_path):
    cfg = _serial_config(config_file, pty_feeder, flush=2.0)
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN 7\nOUT 3\n" * 100)
    time.sleep(0.5)
    assert d.terminate(signal.SIGINT) == 0, d.output()
    assert db_totals(tmp_path / "counts.db") == (700, 300)


def test_runs_are_recorded(config_file, daemon, pty_feeder, tmp_path):
    cfg = _serial_config(config_file, pty_feeder)
    for _ in range(2):
        d = daemon(cfg)
        d.wait_ready()
        d.terminate()
    conn = sqlite3.connect(tmp_path / "counts.db")
    rows = conn.execute("SELECT started_at, last_seen, stopped_at, stop_reason FROM runs").fetchall()
    assert len(rows) == 2
    assert all(r[2] is not None and r[2] >= r[0] and r[3] == "SIGTERM" for r in rows)
    assert rows[1][0] >= rows[0][2]


@pytest.mark.slow
def test_kill9_under_load_loses_at_most_one_flush_interval(config_file, daemon, pty_feeder,
                                                           tmp_path):
    """Repeated kill -9 at random moments: never corrupt, never invent, lose ≤ one interval."""
    flush, rate = 1.0, 300.0
    cfg = _serial_config(config_file, pty_feeder, flush=flush)
    db = tmp_path / "counts.db"
    rnd = random.Random(1234)
    stored_before = 0
    worst = 0
    for i in range(8):
        pty_feeder.replug()
        pty_feeder.written = 0
        d = daemon(cfg)
        d.wait_ready()
        pty_feeder.start(rate=rate)
        time.sleep(rnd.uniform(0.3, 2.5))
        d.kill9()
        injected = pty_feeder.stop()
        assert integrity(db) == "ok", f"kill #{i}: integrity check failed"
        stored = db_totals(db)[0] - stored_before
        lost = injected - stored
        worst = max(worst, lost)
        assert stored <= injected, f"kill #{i}: {stored} stored but only {injected} injected"
        # one flush interval of pulses, plus what the kernel had not handed over yet
        assert lost <= rate * (flush + 0.5), f"kill #{i}: lost {lost} of {injected}"
        stored_before += stored
    print(f"worst loss over 8 kills at {rate:.0f}/s, flush {flush} s: {worst} pulses")


def test_reader_holding_database_does_not_stall_counting(config_file, daemon, pty_feeder,
                                                        tmp_path):
    cfg = _serial_config(config_file, pty_feeder, flush=0.5)
    db = tmp_path / "counts.db"
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.start(rate=400)
    reader = sqlite3.connect(db)
    reader.execute("BEGIN")
    held = reader.execute("SELECT coalesce(sum(in_count), 0) FROM counts").fetchone()[0]
    seen = db_totals(db)[0]
    time.sleep(3)  # the reader keeps its snapshot open all this time
    assert reader.execute("SELECT coalesce(sum(in_count), 0) FROM counts").fetchone()[0] == held
    later = db_totals(db)[0]
    assert later >= seen + 400 * 2, f"counting stalled behind the reader: {seen} -> {later}"
    injected = pty_feeder.stop()
    assert d.terminate() == 0
    reader.rollback()
    reader.close()
    assert db_totals(db)[0] == injected
    assert "database is locked" not in d.output()


def test_status_while_running(config_file, daemon, pty_feeder, tmp_path):
    import subprocess
    import sys

    cfg = _serial_config(config_file, pty_feeder, flush=0.5)
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN 12\nOUT 5\nGARBAGE\n")
    wait_for(lambda: db_totals(tmp_path / "counts.db") == (12, 5), what="counts flushed")
    out = subprocess.run([sys.executable, "-m", "kiosk", "status", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "daemon:   running" in out.stdout
    assert "12 in, 5 out" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("door"))
    assert " ok " in line and " 12 " in line
    wait_for(lambda: " 1 " in next(
        x for x in subprocess.run([sys.executable, "-m", "kiosk", "status", "--config", str(cfg)],
                                  capture_output=True, text=True).stdout.splitlines()
        if x.startswith("door")), what="rejected line shown")
    d.terminate()
    out = subprocess.run([sys.executable, "-m", "kiosk", "status", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=30)
    assert "stopped by SIGTERM" in out.stdout


def test_speed_refused_with_real_sensors(config_file, tmp_path):
    import subprocess
    import sys

    cfg = config_file(SERIAL.format(port=tmp_path / "nothing"))
    out = subprocess.run([sys.executable, "-m", "kiosk", "run", "--config", str(cfg),
                          "--speed", "60"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "only allowed when every sensor is simulated" in out.stderr
    assert "Traceback" not in out.stderr


def test_unplugged_serial_at_start_keeps_daemon_counting(config_file, daemon, pty_feeder,
                                                         tmp_path):
    pty_feeder.unplug()
    pty_feeder.link.unlink()
    cfg = _serial_config(config_file, pty_feeder, flush=0.5)
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.replug()
    # the sensor's own state event, not any "ok" in the log
    wait_for(lambda: f"connected to {pty_feeder.link}" in d.output(), timeout=15,
             what="sensor state ok (connected/reconnected)")
    pty_feeder.write(b"IN 3\n")
    wait_for(lambda: db_totals(tmp_path / "counts.db")[0] == 3, what="count after replug")
    assert d.terminate() == 0


def test_watchdog_pings_while_the_writer_runs(config_file, daemon, pty_feeder):
    cfg = _serial_config(config_file, pty_feeder)
    d = daemon(cfg, env={"WATCHDOG_USEC": "1000000"})  # 1 s: pings every 0.5 s
    d.wait_ready()
    wait_for(lambda: sum("WATCHDOG=1" in m for m in d.notify.poll()) >= 3, timeout=10,
             what="three watchdog pings")
    d.proc.send_signal(signal.SIGSTOP)  # a hung daemon stops pinging
    time.sleep(0.3)
    before = sum("WATCHDOG=1" in m for m in d.notify.poll())
    time.sleep(1.5)
    assert sum("WATCHDOG=1" in m for m in d.notify.poll()) == before
    d.proc.send_signal(signal.SIGCONT)
    assert d.terminate() == 0


def test_sighup_reloads_config(config_file, daemon, pty_feeder, tmp_path):
    cfg = _serial_config(config_file, pty_feeder, flush=0.5)
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN 2\n")
    wait_for(lambda: db_totals(tmp_path / "counts.db")[0] == 2, what="first count")
    # a broken config is refused and the daemon keeps counting with the old one
    good = cfg.read_text()
    cfg.write_text(good + "\n[[sensors]]\nid = \"door\"\ntype = \"gpio\"\npin = 4\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reload failed" in d.output(), what="refused reload")
    pty_feeder.write(b"IN 3\n")
    wait_for(lambda: db_totals(tmp_path / "counts.db")[0] == 5, what="counting after refusal")
    # a valid new config: the sensor id changes
    cfg.write_text(good.replace('id = "door"', 'id = "front-door"'))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "config reloaded" in d.output(), what="reload")
    time.sleep(1.0)
    pty_feeder.write(b"IN 4\n")
    wait_for(lambda: db_totals(tmp_path / "counts.db")[0] == 9, what="counting after reload")
    assert d.terminate() == 0
    conn = sqlite3.connect(tmp_path / "counts.db")
    per_sensor = dict(conn.execute(
        "SELECT sensor_id, sum(in_count) FROM counts GROUP BY sensor_id").fetchall())
    assert per_sensor == {"door": 5, "front-door": 4}
    kinds = [r[0] for r in conn.execute("SELECT kind FROM journal ORDER BY id")]
    assert "config-reload" in kinds


# -- the loop in-process, driven by a ManualClock ---------------------------------------------


class _FakeService:
    """Stands in for the upload service: remembers the [upload] it was built for."""

    def __init__(self, daemon) -> None:
        self.upload = daemon.config.upload
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


def _in_process(cfg_path, clock, driver, **kw):
    """Run a Daemon in this (main) thread while ``driver(daemon)`` runs in another; the
    driver's failure is re-raised.  Returns the daemon and run()'s exit status."""
    import threading

    from kiosk import config as config_mod
    from kiosk.daemon import Daemon

    d = Daemon(config_mod.load(cfg_path), clock=clock, config_path=str(cfg_path), **kw)
    errors: list[BaseException] = []

    def wrap() -> None:
        try:
            wait_for(lambda: d.writer is not None and d.sensors
                     and d.sensors[0].state == "ok", what="daemon running")
            driver(d)
        except BaseException as e:
            errors.append(e)
        finally:
            d.request_stop()

    t = threading.Thread(target=wrap, daemon=True)
    t.start()
    rc = d.run()
    t.join(10)
    if errors:
        raise errors[0]
    return d, rc


def test_loop_timers_follow_a_manual_clock(config_file, pty_feeder, tmp_path):
    from kiosk.clock import ManualClock
    from kiosk.daemon import HEARTBEAT_S

    clock = ManualClock()
    db = tmp_path / "counts.db"

    def drive(d) -> None:
        pty_feeder.write(b"IN 3\n")
        wait_for(lambda: d.writer.pending, what="pulse handed to the writer")
        time.sleep(0.3)  # real time passes, clock time does not: no flush
        assert db_totals(db) == (0, 0)
        clock.advance(1.0)
        wait_for(lambda: db_totals(db) == (3, 0), what="flush after one clock interval")
        flushes = d.writer.stats.flushes
        time.sleep(0.3)
        assert d.writer.stats.flushes == flushes  # nothing pending, no heartbeat due
        clock.advance(HEARTBEAT_S)
        wait_for(lambda: d.writer.stats.flushes > flushes, what="heartbeat flush")
        pty_feeder.write(b"IN 4\n")
        wait_for(lambda: d.writer.pending, what="second pulse")
        # the stop (driver's finally) drains and flushes without the clock moving

    _, rc = _in_process(_serial_config(config_file, pty_feeder, flush=1.0), clock, drive)
    assert rc == 0
    assert db_totals(db) == (7, 0)


def test_reload_rebuilds_only_what_changed(config_file, pty_feeder, tmp_path):
    import signal as _signal

    from kiosk.clock import ManualClock
    from tests.conftest import PtyFeeder

    other = PtyFeeder(tmp_path / "ttyOTHER")
    upload = '\n[upload]\nurl = "{url}"\ntoken_file = "{tok}"\n'
    tok = tmp_path / "token"
    tok.write_text("secret\n")
    gate = SERIAL.replace('"door"', '"east-gate"').replace("reconnect_max_s = 1",
                                                          "reconnect_max_s = {mx}")

    def write(mx: int, url: str) -> None:
        sensors = SERIAL.format(port=pty_feeder.link) + gate.format(port=other.link, mx=mx)
        config_file(sensors, flush=0.5, extra=upload.format(url=url, tok=tok))

    write(1, "http://127.0.0.1:9/a")
    injected: list[int] = []

    def drive(d) -> None:
        door = d.sensors[0]
        # the sensors start before the upload service: wait for it, not just for them
        first_upload = wait_for(lambda: d._upload, what="the upload service")
        assert first_upload.started and first_upload.upload.url.endswith("/a")
        pty_feeder.start(rate=300)
        for i in range(6):
            write(2 + i, "http://127.0.0.1:9/a")
            gate_before = d.sensors[1]
            d._on_signal(_signal.SIGHUP, None)
            wait_for(lambda gb=gate_before: d.sensors[1] is not gb, what=f"reload #{i}")
            assert d.sensors[0] is door and not door.closed
            assert gate_before.closed
            assert d._upload is first_upload  # [upload] unchanged: not rebuilt
            time.sleep(0.05)
        write(9, "http://127.0.0.1:9/b")
        d._on_signal(_signal.SIGHUP, None)
        wait_for(lambda: d._upload is not first_upload, what="uploads rebuilt")
        assert first_upload.stopped and d._upload.upload.url.endswith("/b")
        injected.append(pty_feeder.stop())
        time.sleep(0.3)  # the kernel hands the last lines to the reader

    try:
        _, rc = _in_process(tmp_path / "kiosk.toml", ManualClock(), drive,
                            upload_factory=_FakeService)
        assert rc == 0
    finally:
        other.close()
    conn = sqlite3.connect(tmp_path / "counts.db")
    per_sensor = dict(conn.execute(
        "SELECT sensor_id, sum(in_count) FROM counts GROUP BY sensor_id").fetchall())
    assert per_sensor == {"door": injected[0]}
    messages = [r[0] for r in conn.execute(
        "SELECT message FROM journal WHERE kind = 'config-reload' ORDER BY id")]
    assert len(messages) == 7
    assert all("restarted east-gate" in m and "door" not in m for m in messages)
    assert "uploads rebuilt" in messages[-1] and "uploads rebuilt" not in messages[0]
