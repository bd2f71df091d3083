"""The whole daemon in-process with GPIO sensors on gpiozero's MockFactory."""

from __future__ import annotations

import threading

from kiosk import config
from kiosk.clock import ManualClock
from kiosk.daemon import Daemon
from kiosk.store import Store
from tests.conftest import config_text, gpio_pair_sensor, gpio_sensor

SENSORS = gpio_sensor("beam", 17) + gpio_pair_sensor("pair", 22, 27)


def test_gpio_pulses_reach_the_database(tmp_path, factory):
    cfg = config.loads(config_text(tmp_path / "c.db", SENSORS, flush=0.2))
    clock = ManualClock(1_795_417_200.0)
    d = Daemon(cfg, clock=clock, pin_factory=factory)
    beam, a, b = factory.pin(17), factory.pin(22), factory.pin(27)

    def drive() -> None:
        import time

        while d.writer is None or len(d.sensors) < 2 or d.sensors[1].state != "ok":
            time.sleep(0.01)
        for _ in range(50):  # active low with the default pull-up
            beam.drive_low()
            clock.advance(0.08)
            beam.drive_high()
            clock.advance(0.2)
        for first, second in [(a, b)] * 7 + [(b, a)] * 3:
            first.drive_low()
            clock.advance(0.1)
            second.drive_low()
            clock.advance(0.1)
            first.drive_high()
            clock.advance(0.1)
            second.drive_high()
            clock.advance(0.5)
        a.drive_low()  # a turn-back: A broken and released, B never
        clock.advance(0.2)
        a.drive_high()
        clock.advance(3)
        d.request_stop()

    t = threading.Thread(target=drive)
    t.start()
    assert d.run() == 0
    t.join()
    with Store.open_reader(tmp_path / "c.db") as s:
        assert s.totals_between(0, 2e10) == {"beam": (50, 0), "pair": (7, 3)}
        assert s.integrity_check() == "ok"


def test_clock_jump_splits_the_running_record(tmp_path, factory):
    """An NTP step of +3 days (fake-hwclock boot) is not counted as running time."""
    import time
    from zoneinfo import ZoneInfo

    from kiosk.periods import totals

    cfg = config.loads(config_text(tmp_path / "c.db", SENSORS, flush=0.2))
    t0 = 1_795_417_200.0
    clock = ManualClock(t0)
    d = Daemon(cfg, clock=clock, pin_factory=factory)
    beam = factory.pin(17)

    def pulse() -> None:
        beam.drive_low()
        clock.advance(0.08)
        beam.drive_high()
        clock.advance(0.2)

    def drive() -> None:
        while d.writer is None or not d.sensors or d.sensors[0].state != "ok":
            time.sleep(0.01)
        pulse()
        clock.advance(0.5)  # the loop's timers read this clock: a tick notes the time
        time.sleep(0.5)
        clock.jump(3 * 86400)
        clock.advance(0.5)  # the next tick notices the jump
        time.sleep(0.5)
        pulse()
        clock.advance(600)
        time.sleep(1.0)
        d.request_stop()

    t = threading.Thread(target=drive)
    t.start()
    assert d.run() == 0
    t.join()
    with Store.open_reader(tmp_path / "c.db") as s:
        runs = s.runs(0, 2e10)
        assert len(runs) == 2, runs
        assert runs[0][1] < t0 + 60 and runs[1][0] >= t0 + 3 * 86400
        kinds = [e["kind"] for e in s.journal()]
        assert "clock-jump" in kinds
        rows = totals(s, t0 - 3600, t0 + 4 * 86400, "1h", ZoneInfo("Europe/Helsinki"), ["beam"])
        assert sum(r.in_count for r in rows) == 2
        assert len(rows) == 2  # the hour before the jump and the hour after; the gap is not sent
