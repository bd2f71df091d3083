"""The whole daemon in-process with GPIO sensors on gpiozero's MockFactory."""

from __future__ import annotations

import threading

import pytest
from gpiozero.pins.mock import MockFactory

from kiosk import config
from kiosk.clock import ManualClock
from kiosk.daemon import Daemon
from kiosk.store import Store

CONFIG = """
[device]
id = "t"
site = "s"
[storage]
path = "{db}"
flush_interval_s = 0.2
[[sensors]]
id = "beam"
type = "gpio"
pin = 17
[[sensors]]
id = "pair"
type = "gpio-pair"
pin_a = 22
pin_b = 27
"""


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def test_gpio_pulses_reach_the_database(tmp_path, factory):
    cfg = config.loads(CONFIG.format(db=tmp_path / "c.db"))
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
