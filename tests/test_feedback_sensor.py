"""Feedback terminals: buttons on gpiozero's MockFactory with a ManualClock setting every
duration; the simulated terminal; their config."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from kiosk.clock import ManualClock
from kiosk.config import loads
from kiosk.events import Answer, SensorEvent
from kiosk.exc import ConfigError, SensorError
from kiosk.sensors import build_sensors
from kiosk.sensors.feedback import FeedbackSensor
from kiosk.sensors.feedback_simulated import SimulatedFeedbackSensor


class HeldLowPin(MockPin):
    """A pin held low whatever the pull (a button jammed in before the daemon started)."""

    def _set_pull(self, value):
        super()._set_pull(value)
        self._change_state(False)


BUTTONS = {"very_happy": 5, "happy": 6, "unhappy": 13, "very_unhappy": 19}


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


class Rig:
    def __init__(self, factory: MockFactory, **kw) -> None:
        self.factory = factory
        self.clock = ManualClock()
        self.out: list = []
        self.sensor = FeedbackSensor("exit", buttons=kw.pop("buttons", BUTTONS),
                                     emit=self.out.append, clock=self.clock,
                                     pin_factory=factory, **kw)
        self.sensor.start()

    def ms(self, ms: float) -> None:
        self.clock.advance(ms / 1000)
        self.sensor.tick(self.clock.now())

    def press(self, level: str, on_ms: float = 150, off_ms: float = 0) -> float:
        """Press (drive the pulled-up pin to ground), hold ``on_ms``, release, wait ``off_ms``."""
        pin = self.factory.pin(BUTTONS[level])
        ts = self.clock.now()
        pin.drive_low()
        self.ms(on_ms)
        pin.drive_high()
        self.ms(off_ms)
        return ts

    @property
    def answers(self) -> list[Answer]:
        return [m for m in self.out if isinstance(m, Answer)]

    @property
    def events(self) -> list[SensorEvent]:
        return [m for m in self.out if isinstance(m, SensorEvent)]


def test_one_press_is_one_answer_with_its_rank_and_time(factory):
    rig = Rig(factory)
    assert rig.sensor.state == "ok"
    ts = rig.press("unhappy", 150, 5000)
    ts2 = rig.press("very_happy", 200)
    a, b = rig.answers
    assert (a.level, a.rank, a.scale, a.repeated, a.ts) == ("unhappy", 2, 4, False, ts)
    assert (b.level, b.rank, b.repeated, b.ts) == ("very_happy", 0, False, ts2)
    assert rig.sensor.status()["answers"] == {"very_happy": 1, "happy": 0, "unhappy": 1,
                                              "very_unhappy": 0}


def test_contact_chatter_and_noise_are_one_answer(factory):
    rig = Rig(factory)
    pin = factory.pin(BUTTONS["happy"])
    # a bouncing contact: 5 ms spikes (noise), then a real press with 20 ms gaps of chatter
    for _ in range(4):
        pin.drive_low()
        rig.ms(5)
        pin.drive_high()
        rig.ms(5)
    assert rig.answers == []
    pin.drive_low()
    rig.ms(120)
    for _ in range(3):
        pin.drive_high()
        rig.ms(20)
        pin.drive_low()
        rig.ms(40)
    pin.drive_high()
    rig.ms(10)
    assert [(a.level, a.repeated) for a in rig.answers] == [("happy", False)]
    st = rig.sensor.status()
    assert st["noise"] == 4 and st["chatter"] == 3


def test_a_child_pressing_twenty_times_is_one_answer_and_nineteen_repeated(factory):
    rig = Rig(factory, lockout_s=3)
    levels = ["very_happy", "very_unhappy"]
    for n in range(20):  # 20 presses 0.5 s apart, over both ends of the scale
        rig.press(levels[n % 2], 100, 400)
    assert len(rig.answers) == 20
    assert [a.repeated for a in rig.answers] == [False] + [True] * 19
    assert rig.answers[0].level == "very_happy"
    st = rig.sensor.status()
    assert sum(st["answers"].values()) == 1 and sum(st["repeated"].values()) == 19
    # the lock-out runs from the latest press: 2.9 s later is still repeated, 3.1 s not
    rig.ms(2900 - 500)
    rig.press("happy", 100, 3000)
    rig.press("happy", 100)
    assert [a.repeated for a in rig.answers[-2:]] == [True, False]


def test_lockout_zero_makes_every_press_an_answer(factory):
    rig = Rig(factory, lockout_s=0)
    for _ in range(5):
        rig.press("happy", 80, 100)
    assert [a.repeated for a in rig.answers] == [False] * 5


def test_a_held_button_is_a_fault_not_answers(factory):
    rig = Rig(factory, stuck_after_s=10)
    pin = factory.pin(BUTTONS["unhappy"])
    pin.drive_low()
    for _ in range(30):  # 15 s held, ticking every 0.5 s
        rig.ms(500)
    assert rig.sensor.state == "stuck"
    stuck = [e for e in rig.events if e.state == "stuck"]
    assert stuck and stuck[0].level == "WARNING" and "unhappy" in stuck[0].message
    # another button still answers while one is stuck
    rig.press("happy", 100)
    assert [a.level for a in rig.answers] == ["happy"]
    pin.drive_high()
    rig.ms(10)
    assert rig.sensor.state == "ok"
    assert [a.level for a in rig.answers] == ["happy"]  # the release is no answer
    assert rig.sensor.status()["stuck"] == 1


def test_a_button_held_at_start_is_judged_at_release(factory):
    factory.pin(BUTTONS["happy"], pin_class=HeldLowPin)
    rig = Rig(factory, stuck_after_s=2)
    for _ in range(6):
        rig.ms(500)
    assert rig.sensor.state == "stuck"
    factory.pin(BUTTONS["happy"]).drive_high()
    rig.ms(10)
    assert rig.answers == [] and rig.sensor.state == "ok"


def test_the_thank_you_light_after_an_answer_not_after_repeats(factory):
    rig = Rig(factory, led_pin=26, led_s=2)
    led = factory.pin(26)
    assert led.state is False or led.state == 0
    rig.press("very_happy", 100)
    assert led.state and rig.sensor.led_lit
    rig.ms(1000)
    assert led.state
    rig.ms(1000)
    assert not led.state and not rig.sensor.led_lit
    rig.press("happy", 100)  # within lock-out of the first press? no: 2.1 s < 3 s -> repeated
    assert rig.answers[-1].repeated and not led.state
    rig.sensor.close()
    rig.sensor.close()  # idempotent
    assert not led.state


def test_bad_options_name_the_sensor(factory):
    clock = ManualClock()
    with pytest.raises(SensorError, match=r"'exit'.*levels"):
        FeedbackSensor("exit", buttons={"good": 5}, emit=print, clock=clock, pin_factory=factory)
    with pytest.raises(SensorError, match="already used"):
        FeedbackSensor("exit", buttons={"good": 5, "bad": "GPIO5"}, emit=print, clock=clock,
                       pin_factory=factory)
    with pytest.raises(SensorError, match="led_pin"):
        FeedbackSensor("exit", buttons={"good": 5, "bad": 6}, led_pin=6, emit=print,
                       clock=clock, pin_factory=factory)
    with pytest.raises(SensorError, match="lockout_s"):
        FeedbackSensor("exit", buttons={"good": 5, "bad": 6}, lockout_s=-1, emit=print,
                       clock=clock, pin_factory=factory)


_CFG = """
[device]
id = "k1"
site = "s1"
[[sensors]]
id = "door"
type = "gpio"
pin = 17
[[sensors]]
id = "exit-feedback"
type = "feedback"
{extra}
"""


def test_config_validates_buttons_and_pins_across_sensors(factory):
    cfg = loads(_CFG.format(extra='buttons = { very_happy = 5, happy = "GPIO6", '
                                  'unhappy = 13 }\nled_pin = 26'))
    sc = cfg.sensors[1]
    assert sc.options["buttons"] == {"very_happy": 5, "happy": 6, "unhappy": 13}
    assert sc.options["lockout_s"] == 3.0 and sc.options["led_pin"] == 26
    sensors = build_sensors(cfg, emit=print, clock=ManualClock(), pin_factory=factory)
    assert isinstance(sensors[1], FeedbackSensor) and sensors[1].levels == (
        "very_happy", "happy", "unhappy")
    bad = [
        ('buttons = { good = 17, bad = 6 }', "buttons.good.*already used by sensor 'door'"),
        ('buttons = { good = 5, bad = 6 }\nled_pin = 17', "led_pin.*already used"),
        ('buttons = { good = 5 }', "1 levels"),
        ('buttons = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6 }', "6 levels"),
        ('buttons = { Good = 5, bad = 6 }', "level name"),
        ('buttons = { good = 5, bad = 40 }', "bad: BCM pins"),
        ('buttons = [5, 6]', "expected a table"),
        ('buttons = { good = 5, bad = 6 }\nlockout_s = "3"', "lockout_s"),
        ('buttons = { good = 5, bad = 6 }\nlockuot_s = 3', "did you mean 'lockout_s'"),
        ('', "buttons: missing"),
    ]
    for extra, pattern in bad:
        with pytest.raises(ConfigError, match=pattern):
            loads(_CFG.format(extra=extra))


def test_simulated_answers_follow_the_shares_and_opening_hours():
    clock = ManualClock(start=1_790_000_000.0)
    out: list = []
    sim = SimulatedFeedbackSensor(
        "sim", emit=out.append, clock=clock, answers_per_day=3000, weekend_answers_per_day=3000,
        shares={"good": 3, "ok": 1, "bad": 0}, repeat_share=0.1, seed=7,
        weekday_hours="08:00-20:00", weekend_hours="08:00-20:00")
    expected = sim.expected_answers(clock.now(), clock.now() + 7 * 86400)
    sim.advance_to(clock.now() + 7 * 86400)
    answers = [a for a in out if isinstance(a, Answer) and not a.repeated]
    repeats = [a for a in out if isinstance(a, Answer) and a.repeated]
    assert expected == pytest.approx(21000)
    assert abs(len(answers) - expected) < 5 * expected ** 0.5
    good = sum(a.level == "good" for a in answers) / len(answers)
    assert good == pytest.approx(0.75, abs=0.02)
    assert not any(a.level == "bad" for a in answers)
    assert len(repeats) / len(answers) == pytest.approx(0.1, abs=0.01)
    assert all(a.scale == 3 for a in answers)
    from datetime import datetime
    from zoneinfo import ZoneInfo

    hours = {datetime.fromtimestamp(a.ts, ZoneInfo("Europe/Helsinki")).hour for a in answers}
    assert hours <= set(range(8, 20)) and {8, 12, 19} <= hours


def test_simulated_terminal_config_defaults():
    cfg = loads(_CFG.replace('type = "feedback"', 'type = "feedback-simulated"').format(extra=""))
    opts = cfg.sensors[1].options
    assert opts["answers_per_day"] == 150
    assert list(opts["shares"]) == ["very_happy", "happy", "unhappy", "very_unhappy"]
    assert sum(opts["shares"].values()) == pytest.approx(1)
    with pytest.raises(ConfigError, match=r"shares.*weight"):
        loads(_CFG.replace('type = "feedback"', 'type = "feedback-simulated"').format(
            extra='shares = { good = -1, bad = 1 }'))
