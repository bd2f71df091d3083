"""The daemon tells the truth: systemd's STATUS per sensor, a daemon with no working sensor
keeps trying, and a -wal file deleted under the running daemon is repaired.

Real daemon processes, real ptys, a real notify socket; GPIO on gpiozero's MockFactory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kiosk import config
from kiosk.clock import ManualClock
from kiosk.daemon import SENSOR_RETRY_MIN_S, Daemon
from kiosk.store import Store
from tests.conftest import (
    ROOT,
    SERIAL_SENSOR,
    PtyFeeder,
    config_text,
    db_totals,
    gpio_sensor,
    integrity,
    wait_for,
)


def statuses(d) -> list[str]:
    """Every STATUS= value the daemon sent, in order."""
    out = []
    for message in d.notify.poll():
        out += [line[7:] for line in message.splitlines() if line.startswith("STATUS=")]
    return out


def wait_status(d, text: str, timeout: float = 15.0) -> str:
    found = wait_for(lambda: next((s for s in reversed(statuses(d)) if text in s), None),
                     timeout, what=f"STATUS with {text!r}; got {statuses(d)[-3:]}")
    return found


def kiosk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_status_names_each_sensor_and_follows_every_change(config_file, daemon, pty_feeder,
                                                            tmp_path):
    gate_link = tmp_path / "ttyGATE"  # not plugged in at start
    gate = SERIAL_SENSOR.replace('"door"', '"east-gate"').format(port=gate_link)
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link) + gate, flush=0.5)
    d = daemon(cfg)
    d.wait_ready()
    ready = next(m for m in d.notify.poll() if "READY=1" in m)
    assert "STATUS=counting on 1 of 2 sensors; east-gate down: " in ready
    assert "ttyGATE" in ready and "No such file" in ready
    plugged = PtyFeeder(gate_link)  # the cable comes back
    try:
        wait_status(d, "counting on 2 of 2 sensors")
        assert statuses(d)[-1] == "counting on 2 of 2 sensors"
        pty_feeder.unplug()  # the door's cable goes
        door_down = wait_status(d, "counting on 1 of 2 sensors; door down")
        assert "ttyKIOSK" in door_down
        pty_feeder.replug()
        wait_status(d, "counting on 2 of 2 sensors")
        # a reload that drops a sensor is reflected too
        config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5)
        d.proc.send_signal(signal.SIGHUP)
        wait_status(d, "counting on 1 of 1 sensor")
    finally:
        plugged.close()
    assert d.terminate() == 0, d.output()


def test_no_working_sensor_keeps_the_daemon_running_and_counting_later(config_file, daemon,
                                                                        tmp_path):
    link = tmp_path / "ttyLATE"
    cfg = config_file(SERIAL_SENSOR.format(port=link), flush=0.5)
    d = daemon(cfg)
    d.wait_ready()
    assert "counting on 0 of 1 sensor; door down" in statuses(d)[-1]
    time.sleep(1.0)
    assert d.proc.poll() is None, d.output()  # no crash loop: it waits for the cable
    feeder = PtyFeeder(link)
    try:
        wait_status(d, "counting on 1 of 1 sensor")
        feeder.write(b"IN\n" * 7)
        wait_for(lambda: db_totals(tmp_path / "counts.db") == (7, 0), what="counts after the cable")
    finally:
        feeder.close()
    assert d.terminate() == 0


def test_a_gpio_sensor_that_cannot_start_is_tried_again(tmp_path, factory):
    """The pin is held by something else at start (a stale process); once it is free, the
    daemon's next attempt claims it and counting begins, without a restart."""
    from gpiozero import Button

    cfg = config.loads(config_text(tmp_path / "c.db", gpio_sensor("beam", 17), flush=0.2))
    clock = ManualClock(1_795_417_200.0)
    d = Daemon(cfg, clock=clock, pin_factory=factory)
    squatter = Button(17, pin_factory=factory)
    beam = factory.pin(17)
    seen: dict[str, object] = {}

    def drive() -> None:
        try:
            steps()
        finally:
            d.request_stop()

    def steps() -> None:
        wait_for(lambda: d.writer is not None and d.writer.sensor_rows[0].state == "down",
                 what="the sensor down at start")
        seen["status"] = d.status_text()
        clock.advance(0.5)
        time.sleep(0.3)
        assert d.writer.sensor_rows[0].state == "down"  # not yet: the retry waits
        squatter.close()
        clock.advance(SENSOR_RETRY_MIN_S + 1)
        wait_for(lambda: d.sensors[0].state == "ok", what="the sensor started on retry")
        for _ in range(5):
            beam.drive_low()
            clock.advance(0.08)
            beam.drive_high()
            clock.advance(0.2)
        clock.advance(1)
        wait_for(lambda: d.status_text() == "counting on 1 of 1 sensor", what="status after")

    t = threading.Thread(target=drive)
    t.start()
    assert d.run() == 0
    t.join()
    assert str(seen["status"]).startswith("counting on 0 of 1 sensor; beam down: cannot start")
    with Store.open_reader(tmp_path / "c.db") as s:
        assert s.totals_between(0, 2e10) == {"beam": (5, 0)}
        messages = [e["message"] for e in s.journal()]
    assert any("started after 2 attempts" in m for m in messages), messages


def test_a_deleted_wal_file_is_repaired_and_nothing_is_lost(config_file, daemon, pty_feeder,
                                                            tmp_path):
    db = tmp_path / "counts.db"
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.3)
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN\n" * 40)
    wait_for(lambda: db_totals(db) == (40, 0), what="first counts")
    wal = Path(str(db) + "-wal")
    before = os.stat(wal).st_ino
    wal.unlink()  # a cleanup script, or someone tidying up
    pty_feeder.write(b"IN\n" * 60)

    def repaired() -> bool:
        try:
            return os.stat(wal).st_ino != before or True
        except FileNotFoundError:
            return False

    wait_for(repaired, timeout=15, what="a new -wal file")
    wait_for(lambda: db_totals(db) == (100, 0), timeout=15, what="all counts readable")
    status = kiosk("status", "--config", str(cfg))
    assert status.returncode == 0, status.stderr
    assert "100 in" in status.stdout and "disk I/O" not in status.stdout + status.stderr
    log = kiosk("log", "--config", str(cfg), "--kind", "storage")
    assert "-wal was deleted while the daemon was running" in log.stdout, log.stdout
    pty_feeder.write(b"OUT\n" * 5)
    wait_for(lambda: db_totals(db) == (100, 5), what="counting goes on")
    assert d.terminate() == 0, d.output()
    assert db_totals(db) == (100, 5)
    assert integrity(db) == "ok"
