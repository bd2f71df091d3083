"""Time you can trust on a Pi without a battery clock, and a clock that steps.

The daemon runs in-process on a :class:`ManualClock` whose sync state, boot id and boot time
the tests drive (a boot 3 h behind, a daemon restart and a reboot before NTP answers), with
GPIO beams on gpiozero's MockFactory; the step-back case uploads to the reference receiver
on 127.0.0.1.  One test uses the real kernel's clock state and real processes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kiosk import config
from kiosk.annotations import flags_for
from kiosk.clock import ManualClock, kernel_clock_synchronized
from kiosk.daemon import Daemon
from kiosk.periods import totals
from kiosk.receiver import Receiver
from kiosk.store import Store
from tests.conftest import ROOT, SERIAL_SENSOR, config_text, db_totals, gpio_sensor, wait_for
from tests.test_upload import TOKEN, Device, H, iso, rx_totals, visits

TRUE_T0 = 1_795_424_400.0  # 2026-11-23 07:00 UTC (09:00 in Helsinki), the true time at boot
BEHIND = 3 * 3600.0  # fake-hwclock restored a time 3 h old
NTP_DEVICE = '[device]\nid = "k1"\nsite = "s1"\ntimezone = "Europe/Helsinki"\nclock = "{clock}"\n'


def ntp_config(tmp_path: Path, clock: str = "ntp") -> config.Config:
    return config.loads(config_text(tmp_path / "c.db", gpio_sensor("beam", 17), flush=0.2,
                                    device=NTP_DEVICE.format(clock=clock)))


def run(cfg: config.Config, clock: ManualClock, factory, drive: Callable[[Daemon], None]) -> None:
    """Run a daemon in this thread while ``drive(daemon)`` runs in another, then stop it."""
    d = Daemon(cfg, clock=clock, pin_factory=factory)
    errors: list[BaseException] = []

    def wrap() -> None:
        try:
            wait_for(lambda: d.writer is not None and d.sensors and d.sensors[0].state == "ok"
                     and d._status_sent, what="daemon running")  # READY sent: the loop starts
            time.sleep(0.05)
            drive(d)
        except BaseException as e:
            errors.append(e)
        finally:
            d.request_stop()

    t = threading.Thread(target=wrap, daemon=True)
    t.start()
    assert d.run() == 0
    t.join(30)
    if errors:
        raise errors[0]


def pulses(factory, clock: ManualClock, n: int, gap: float = 20.0) -> None:
    """``n`` beam breaks, ``gap`` clock seconds apart (each 0.1 s long)."""
    beam = factory.pin(17)
    for _ in range(n):
        beam.drive_low()
        clock.advance(0.1)
        beam.drive_high()
        clock.advance(gap)


def unplaced(db: Path) -> tuple[int, int]:
    with Store.open_reader(db) as s:
        return s.unplaced_summary()


def events(db: Path) -> list[float]:
    with Store.open_reader(db) as s:
        return [r[0] for r in s.conn.execute("SELECT ts FROM events ORDER BY ts")]


def journal(db: Path, kind: str) -> list[str]:
    with Store.open_reader(db) as s:
        return [e["message"] for e in s.journal() if e["kind"] == kind]


def settle(clock: ManualClock, db: Path, what: str, predicate) -> None:
    """Move the clock on in small steps until ``predicate()`` (the loop reads real time too)."""
    def moved() -> bool:
        clock.advance(0.3)
        return bool(predicate())

    wait_for(moved, timeout=15, what=what)


def test_a_boot_3_hours_behind_places_every_pulse_in_its_true_hour(tmp_path, factory):
    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0 - BEHIND, synchronized=False)

    def drive(d: Daemon) -> None:
        clock.advance(100)  # true 09:01:40 local
        pulses(factory, clock, 5)  # 5 visitors over the next 100 s
        clock.advance(1800)
        pulses(factory, clock, 3)
        settle(clock, db, "8 pulses kept unplaced", lambda: unplaced(db) == (8, 8))
        assert db_totals(db) == (0, 0)  # nothing in a wrong hour
        clock.sync(BEHIND)  # NTP answers
        settle(clock, db, "the pulses placed", lambda: unplaced(db) == (0, 0))
        pulses(factory, clock, 2)
        clock.advance(1)

    run(ntp_config(tmp_path), clock, factory, drive)
    assert db_totals(db) == (10, 0)
    ts = events(db)
    first_true = TRUE_T0 + 100
    assert abs(ts[0] - first_true) < 1.0, (ts[0], first_true)
    assert all(TRUE_T0 < t < TRUE_T0 + 3 * 3600 for t in ts), ts
    with Store.open_reader(db) as s:
        by_bucket = s.totals_between(TRUE_T0, TRUE_T0 + 900)
        assert by_bucket == {"beam": (5, 0)}
        runs = s.runs(0, 2e10)
    assert len(runs) == 1 and abs(runs[0][0] - TRUE_T0) < 2, runs  # the run moved too
    (message,) = [m for m in journal(db, "clock") if m.startswith("the wall clock is set")]
    assert "placed 8 visitors (8 pulse messages)" in message
    assert "the clock was 3 h behind" in message


def test_uploads_wait_for_the_clock_and_then_carry_the_true_hours(tmp_path, factory):
    from kiosk.upload import Uploader

    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0 - BEHIND, synchronized=False)
    extra = f'\n[upload]\nurl = "http://127.0.0.1:9/x"\ntoken_file = "{tmp_path / "t"}"\n'
    cfg = config.loads(config_text(db, gpio_sensor("beam", 17), flush=0.2, extra=extra,
                                   device=NTP_DEVICE.format(clock="ntp")))
    scans: list[int] = []

    def drive(d: Daemon) -> None:
        up = Uploader(Store.open(db), cfg, clock=clock, live_run=lambda: d.run_id)
        pulses(factory, clock, 4)
        clock.advance(2 * 3600)  # two hours on the wrong clock
        settle(clock, db, "pulses unplaced", lambda: unplaced(db) == (4, 4))
        scans.append(up.scan(clock.now()))
        clock.sync(BEHIND)
        settle(clock, db, "placed", lambda: unplaced(db) == (0, 0))
        clock.advance(600)
        settle(clock, db, "a heartbeat after the sync", lambda: d.writer.stats.flushes > 3)
        scans.append(up.scan(clock.now()))
        up.store.close()

    run(cfg, clock, factory, drive)
    assert scans[0] == 0  # nothing goes out while the hours are unknown
    assert scans[1] > 0
    with Store.open_reader(db) as s:
        rows = {r[0]: r[1] for r in s.conn.execute("SELECT start, in_count FROM uploads")}
    assert rows.get(int(TRUE_T0)) == 4, rows  # the true 09:00 hour holds them


def test_a_daemon_restart_before_the_sync_keeps_and_places_everything(tmp_path, factory):
    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0 - BEHIND, synchronized=False)
    run(ntp_config(tmp_path), clock, factory, lambda d: (pulses(factory, clock, 6),
                                                           clock.advance(1)))
    assert unplaced(db) == (6, 6)
    clock.advance(300)  # the service restarts 5 min later, same boot, still no NTP

    def second(d: Daemon) -> None:
        pulses(factory, clock, 4)
        settle(clock, db, "all 10 kept", lambda: unplaced(db) == (10, 10))
        clock.sync(BEHIND)
        settle(clock, db, "placed", lambda: unplaced(db) == (0, 0))

    run(ntp_config(tmp_path), clock, factory, second)
    ts = events(db)
    assert len(ts) == 10 and db_totals(db) == (10, 0)
    assert abs(ts[0] - TRUE_T0) < 1.0  # the first run's first pulse at its true time
    with Store.open_reader(db) as s:
        runs = s.runs(0, 2e10)
    assert len(runs) == 2 and all(a >= TRUE_T0 - 1 for a, _ in runs), runs
    assert not any(flags_for(Store.open_reader(db), "beam", t, t + 1) for t in ts)


def test_a_reboot_before_the_sync_is_placed_by_estimate_and_flagged(tmp_path, factory):
    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0 - BEHIND, synchronized=False, boot_id="boot-A")
    run(ntp_config(tmp_path), clock, factory, lambda d: (pulses(factory, clock, 5),
                                                           clock.advance(1)))
    saved = clock.now()  # fake-hwclock saves this at shutdown and restores it at boot
    clock.reboot("boot-B", down_s=1800, wall=saved)  # off for 30 min

    def second(d: Daemon) -> None:
        pulses(factory, clock, 3)
        settle(clock, db, "kept", lambda: unplaced(db) == (8, 8))
        clock.sync(BEHIND + 1800)  # 3 h 30 min behind now (the machine was off 30 min)
        settle(clock, db, "placed", lambda: unplaced(db) == (0, 0))

    run(ntp_config(tmp_path), clock, factory, second)
    ts = events(db)
    assert len(ts) == 8
    # boot A's pulses: by estimate, within the 30 min it was off of the truth, and before boot B
    assert abs(ts[0] - TRUE_T0) <= 1806, ts[0] - TRUE_T0
    boot_b_true_start = clock.now() - clock.boottime()
    assert all(t < boot_b_true_start for t in ts[:5])
    assert all(boot_b_true_start < t < boot_b_true_start + 120 for t in ts[5:])  # exact
    with Store.open_reader(db) as s:
        assert flags_for(s, "beam", ts[0], ts[0] + 1) == ["time-estimated"]
        rows = totals(s, TRUE_T0, TRUE_T0 + 3600, "1h", ZoneInfo("Europe/Helsinki"), ["beam"])
    assert sum(r.in_count for r in rows) == 8
    (message,) = [m for m in journal(db, "clock") if m.startswith("the wall clock is set")]
    assert "from an earlier boot" in message and "time-estimated" in message


def test_clock_system_never_holds(tmp_path, factory):
    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0 - BEHIND, synchronized=False)

    def drive(d: Daemon) -> None:
        pulses(factory, clock, 3)
        settle(clock, db, "counted", lambda: db_totals(db) == (3, 0))

    run(ntp_config(tmp_path, clock="system"), clock, factory, drive)
    assert unplaced(db) == (0, 0)
    assert abs(events(db)[0] - (TRUE_T0 - BEHIND)) < 1  # the clock as it is


def test_a_clock_stepped_forward_after_the_sync_is_not_held(tmp_path, factory):
    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0)

    def drive(d: Daemon) -> None:
        pulses(factory, clock, 2)
        clock.jump(7200)  # a manual change forward
        pulses(factory, clock, 2)
        settle(clock, db, "counted", lambda: db_totals(db) == (4, 0))
        settle(clock, db, "the jump journalled", lambda: journal(db, "clock-jump"))

    run(ntp_config(tmp_path), clock, factory, drive)
    assert unplaced(db) == (0, 0)  # a step after the sync holds nothing back
    assert journal(db, "clock") == []  # and is no "clock set" either


@pytest.fixture
def device(tmp_path):
    made: list[Device] = []

    def make(url: str) -> Device:
        made.append(Device(tmp_path, url))
        return made[-1]

    yield make
    for d in made:
        d.close()


@pytest.fixture
def receiver(tmp_path):
    rx = Receiver(str(tmp_path / "rx.db"), token=TOKEN)
    yield rx
    rx.stop()


def test_a_clock_stepped_back_re_sends_every_re_lived_period(device, receiver):
    """720 pulses: the receiver must hold 720, not 601, after a 3 h step back."""
    receiver.start()
    dev = device(receiver.url)
    dev.hours(3, visits)
    dev.settle()
    assert dev.uploader.cycle() is None
    sent_before = sum(t["in"] for t in rx_totals(receiver).values())
    dev.clock.jump(-3 * H)  # the wall clock steps back 3 h while counting
    dev.hours(3, visits)  # the same three hours are lived again
    dev.settle()
    assert dev.uploader.cycle() is None
    held = rx_totals(receiver)
    local = {(r[0], iso(r[1])): r[2] for r in dev.store.conn.execute(
        "SELECT sensor_id, (start / 3600) * 3600, sum(in_count) FROM counts GROUP BY 1, 2")}
    assert {k: v["in"] for k, v in held.items() if v["in"]} == local
    assert sum(v["in"] for v in held.values()) == 2 * sent_before > 0
    assert {v["revision"] for v in held.values() if v["in"]} == {2}  # every re-lived one
    assert all(dev.outbox()[k][3:] == (2, "sent") for k in local)


@pytest.mark.skipif(kernel_clock_synchronized(), reason="this machine's clock is synchronised; "
                    "the test needs a kernel that says it is not (a container without NTP)")
def test_real_process_on_an_unset_clock_keeps_pulses_until_told_to_trust_it(
        tmp_path, daemon, pty_feeder):
    """The real kernel says the clock is not synchronised (no NTP here): with the default
    clock = "ntp" the daemon keeps every pulse through a restart and says so; configured
    clock = "system", it places them at its next start."""
    db = tmp_path / "counts.db"
    cfg = tmp_path / "kiosk.toml"
    body = config_text(db, SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.3)
    cfg.write_text(body.replace('clock = "system"\n', ""))
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN\n" * 12)
    wait_for(lambda: unplaced(db) == (12, 12), what="12 kept unplaced")
    status = subprocess.run([sys.executable, "-m", "kiosk", "status", "--config", str(cfg)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "clock:    NOT SET yet" in status and "12 pulse message(s) wait" in status, status
    assert d.terminate() == 0
    d = daemon(cfg)  # a restart keeps them
    d.wait_ready()
    assert unplaced(db) == (12, 12) and db_totals(db) == (0, 0)
    assert d.terminate() == 0
    cfg.write_text(body)  # the site has no network: trust the clock as it is
    d = daemon(cfg)
    d.wait_ready()
    wait_for(lambda: db_totals(db) == (12, 0), what="placed at start")
    assert d.terminate() == 0
    assert unplaced(db) == (0, 0)
    assert time.time() - events(db)[0] < 120  # placed by boot time: this very boot


def test_a_beam_broken_before_the_sync_and_released_after_it_is_in_its_true_hour(tmp_path,
                                                                                 factory):
    """The pulse is stamped on the unset clock (when the beam broke) but handed over after
    the clock was set: it is moved by the step like the held ones."""
    db = tmp_path / "c.db"
    clock = ManualClock(TRUE_T0 - BEHIND, synchronized=False)
    beam = factory.pin(17)

    def drive(d: Daemon) -> None:
        clock.advance(600)
        beam.drive_low()  # someone stands in the beam at true 07:10
        clock.advance(0.5)
        clock.sync(BEHIND)
        settle(clock, db, "the clock set", lambda: journal(db, "clock"))
        settle(clock, db, "the clock set", lambda: d.writer.clock_trusted)
        beam.drive_high()  # ... and walks on after the step
        settle(clock, db, "counted", lambda: db_totals(db) == (1, 0))

    run(ntp_config(tmp_path), clock, factory, drive)
    (ts,) = events(db)
    assert abs(ts - (TRUE_T0 + 600)) < 2, ts - TRUE_T0
