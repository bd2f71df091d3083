"""GPIO sensors on gpiozero's MockFactory, with a ManualClock setting every duration."""

from __future__ import annotations

import pytest
from gpiozero import DigitalInputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from kiosk.clock import ManualClock
from kiosk.events import Pulse, SensorEvent
from kiosk.exc import SensorError
from kiosk.sensors.gpio import GPIOPairSensor, GPIOSensor

T0 = 1_790_000_000.0  # ManualClock's default start


class HeldLowPin(MockPin):
    """A pin whose sensor output holds it low, whatever the pull (a beam broken at boot)."""

    def _set_pull(self, value):
        super()._set_pull(value)
        self._change_state(False)


class Line:
    """One mock input line; ``block``/``clear`` drive the electrical level for our polarity."""

    def __init__(self, factory: MockFactory, name: int | str, active_high: bool) -> None:
        self.factory, self.name, self.active_high = factory, name, active_high

    @property
    def pin(self) -> MockPin:
        return self.factory.pin(self.name)

    def block(self) -> None:
        (self.pin.drive_high if self.active_high else self.pin.drive_low)()

    def clear(self) -> None:
        (self.pin.drive_low if self.active_high else self.pin.drive_high)()


class Rig:
    def __init__(self, factory: MockFactory) -> None:
        self.factory = factory
        self.clock = ManualClock()
        self.events: list = []
        self.sensors: list = []

    def gpio(self, pin=17, *, start=True, **kw) -> tuple[GPIOSensor, Line]:
        s = GPIOSensor("door", pin=pin, emit=self.events.append, clock=self.clock,
                       pin_factory=self.factory, **kw)
        self.sensors.append(s)
        if start:
            s.start()
        return s, Line(self.factory, pin, s.active_high)

    def pair(self, pin_a=17, pin_b=27, *, start=True, **kw) -> tuple[GPIOPairSensor, dict]:
        s = GPIOPairSensor("gate", pin_a=pin_a, pin_b=pin_b, emit=self.events.append,
                           clock=self.clock, pin_factory=self.factory, **kw)
        self.sensors.append(s)
        if start:
            s.start()
        lines = {"A": Line(self.factory, pin_a, s.active_high),
                 "B": Line(self.factory, pin_b, s.active_high)}
        return s, lines

    def ms(self, ms: float) -> None:
        self.clock.advance(ms / 1000)

    def pulse(self, line: Line, on_ms: float, off_ms: float = 0) -> float:
        """Block for ``on_ms``, clear, wait ``off_ms``; return the wall time of the block."""
        ts = self.clock.now()
        line.block()
        self.ms(on_ms)
        line.clear()
        self.ms(off_ms)
        return ts

    def play(self, lines: dict, script: str) -> dict[str, float]:
        """Run e.g. "0 A+, 200 B+, 300 A-" (ms from now); return {step: wall time}."""
        base, walls = self.clock.monotonic(), {}
        for step in script.split(","):
            t_ms, edge = step.split()
            self.clock.advance(max(0.0, base + float(t_ms) / 1000 - self.clock.monotonic()))
            walls[step.strip()] = self.clock.now()
            (lines[edge[0]].block if edge[1] == "+" else lines[edge[0]].clear)()
        return walls

    def pulses(self) -> list[Pulse]:
        return [e for e in self.events if isinstance(e, Pulse)]

    def sensor_events(self) -> list[SensorEvent]:
        return [e for e in self.events if isinstance(e, SensorEvent)]


@pytest.fixture
def rig(factory):
    r = Rig(factory)
    yield r
    for s in r.sensors:
        s.close()


def ok_event(rig: Rig, sensor_id: str, message: str) -> SensorEvent:
    return SensorEvent(sensor_id, T0, "state", message, "INFO", "ok")


# --- GPIOSensor -----------------------------------------------------------------------


def test_start_reports_ok(rig):
    s, _ = rig.gpio()
    assert rig.events == [ok_event(rig, "door", "listening on GPIO17")]
    assert s.state == "ok"
    assert s.status() == {"pin": 17, "state": "ok", "active": False, "counted": 0,
                          "noise": 0, "chatter": 0, "stuck": 0}


def test_clean_pulses_count_exactly(rig):
    s, line = rig.gpio()
    rig.events.clear()
    starts = [rig.pulse(line, 120, 300) for _ in range(100)]
    assert rig.events == [Pulse("door", ts, "in", 1) for ts in starts]
    assert s.status()["counted"] == 100
    assert s.status()["noise"] == s.status()["chatter"] == 0


def test_direction_out_is_written_on_pulses(rig):
    _, line = rig.gpio(direction="out")
    ts = rig.pulse(line, 200, 100)
    assert rig.pulses() == [Pulse("door", ts, "out", 1)]


def test_pulse_is_counted_on_release_with_start_time(rig):
    s, line = rig.gpio()
    ts = rig.clock.now()
    line.block()
    rig.ms(500)
    assert rig.pulses() == []
    assert s.status()["active"] is True
    line.clear()
    assert rig.pulses() == [Pulse("door", ts, "in", 1)]
    assert s.status()["active"] is False


def test_bounce_burst_at_leading_edge_counts_once(rig):
    s, line = rig.gpio()
    line.block()  # 5 transitions within 2 ms, then the beam stays broken
    for _ in range(2):
        rig.ms(0.5)
        line.clear()
        rig.ms(0.5)
        line.block()
    settled = rig.clock.now()
    rig.ms(250)
    line.clear()
    assert rig.pulses() == [Pulse("door", settled, "in", 1)]
    assert s.status()["noise"] == 2


def test_bounce_burst_at_trailing_edge_counts_once(rig):
    s, line = rig.gpio()
    ts = rig.pulse(line, 250)
    for _ in range(2):  # 5 transitions within 2 ms after the release
        rig.ms(0.4)
        line.block()
        rig.ms(0.4)
        line.clear()
    rig.ms(0.4)
    line.block()
    rig.ms(0.4)
    line.clear()
    assert rig.pulses() == [Pulse("door", ts, "in", 1)]
    assert s.status()["noise"] == 3
    assert s.status()["counted"] == 1


def test_dropouts_within_holdoff_are_chatter_of_one_visitor(rig):
    s, line = rig.gpio(min_pulse_ms=30, holdoff_ms=50)
    ts = rig.pulse(line, 100, 10)  # a 10 ms dropout...
    rig.pulse(line, 100, 40)  # ...and another 40 ms one: each extends the same visitor
    rig.pulse(line, 100, 200)
    assert rig.pulses() == [Pulse("door", ts, "in", 1)]
    assert s.status()["chatter"] == 2
    ts2 = rig.pulse(line, 100, 0)  # 200 ms later: a new visitor
    assert rig.pulses()[-1] == Pulse("door", ts2, "in", 1)
    assert s.status()["counted"] == 2


def test_too_short_pulses_are_noise(rig):
    s, line = rig.gpio(min_pulse_ms=30)
    for _ in range(10):
        rig.pulse(line, 29, 200)
    assert rig.pulses() == []
    ts = rig.pulse(line, 30, 200)  # exactly min_pulse_ms counts
    assert rig.pulses() == [Pulse("door", ts, "in", 1)]
    assert s.status()["noise"] == 10


@pytest.mark.parametrize(("on_ms", "off_ms", "settings", "expected"), [
    (50, 50, {}, 100),  # 10 Hz with the defaults (30 ms / 50 ms)
    (50, 50, {"holdoff_ms": 40}, 100),
    (20, 20, {"min_pulse_ms": 5, "holdoff_ms": 5}, 100),  # 25 Hz, 20 ms pulses
    (50, 50, {"holdoff_ms": 60}, 1),  # gaps shorter than holdoff: one long visitor
])
def test_fast_pulse_trains(rig, on_ms, off_ms, settings, expected):
    s, line = rig.gpio(**settings)
    starts = [rig.pulse(line, on_ms, off_ms) for _ in range(100)]
    assert rig.pulses() == [Pulse("door", ts, "in", 1) for ts in starts[:expected]]
    assert s.status()["counted"] == expected
    assert s.status()["chatter"] == 100 - expected


@pytest.mark.parametrize(("pull_up", "active_high", "level_when_broken"), [
    (True, None, False),  # open collector pulled up: low while broken (the default)
    (False, None, True),
    (True, False, False),
    (True, True, True),
    (False, False, False),
    (False, True, True),
])
def test_polarity(rig, pull_up, active_high, level_when_broken):
    s, _ = rig.gpio(pull_up=pull_up, active_high=active_high)
    assert s.active_high is level_when_broken
    pin = rig.factory.pin(17)
    assert pin.pull == ("up" if pull_up else "down")
    # drive electrical levels independently of what the sensor believes
    line = Line(rig.factory, 17, level_when_broken)
    line.clear()  # where the pull itself reads "broken", the beam was broken at start
    rig.ms(500)
    rig.events.clear()
    starts = []
    for _ in range(3):
        starts.append(rig.clock.now())
        line.block()
        assert pin.state is level_when_broken
        assert s.status()["active"] is True
        rig.ms(100)
        line.clear()
        assert s.status()["active"] is False
        rig.ms(100)
    assert rig.events == [Pulse("door", ts, "in", 1) for ts in starts]


def test_stuck_beam_warns_is_not_counted_and_recovers(rig):
    s, line = rig.gpio(stuck_after_s=30)
    rig.events.clear()
    line.block()
    rig.ms(30_000)
    s.tick(rig.clock.now())
    assert rig.events == [] and s.state == "ok"  # exactly 30 s is not yet stuck
    rig.ms(1_000)
    s.tick(rig.clock.now())
    s.tick(rig.clock.now())
    assert rig.events == [SensorEvent("door", T0 + 31, "state", "GPIO17 beam blocked for 31 s; "
                                      "not counting until it clears", "WARNING", "stuck")]
    assert s.state == "stuck"
    rig.ms(14_000)
    line.clear()
    assert rig.events[1:] == [SensorEvent("door", T0 + 45, "state",
                                          "GPIO17 beam clear again after 45 s", "INFO", "ok")]
    assert rig.pulses() == []
    assert s.state == "ok"
    rig.ms(1_000)
    ts = rig.pulse(line, 200)
    assert rig.pulses() == [Pulse("door", ts, "in", 1)]
    assert s.status()["stuck"] == 1 and s.status()["counted"] == 1


def test_long_blocking_is_not_counted_even_without_tick(rig):
    s, line = rig.gpio(stuck_after_s=30)
    rig.events.clear()
    rig.pulse(line, 40_000, 100)
    assert rig.events == []
    assert s.status()["stuck"] == 1 and s.status()["counted"] == 0


def test_flicker_as_a_stuck_beam_clears_is_not_a_visitor(rig):
    s, line = rig.gpio(stuck_after_s=30, holdoff_ms=50)
    rig.pulse(line, 40_000, 10)
    rig.pulse(line, 100, 10)  # the beam flickers back on for 100 ms as the box is moved
    assert rig.pulses() == []
    assert s.status()["chatter"] == 1 and s.status()["stuck"] == 1


def test_beam_broken_at_start(rig):
    rig.factory.pin(17, pin_class=HeldLowPin)
    s, line = rig.gpio()
    assert rig.events == [ok_event(rig, "door", "listening on GPIO17 (beam blocked at start)")]
    assert s.status()["active"] is True
    rig.ms(800)
    line.clear()
    assert rig.events[1:] == [Pulse("door", T0, "in", 1)]


def test_beam_broken_at_start_can_be_stuck(rig):
    rig.factory.pin(17, pin_class=HeldLowPin)
    s, line = rig.gpio(stuck_after_s=10)
    rig.ms(11_000)
    s.tick(rig.clock.now())
    assert s.state == "stuck"
    line.clear()
    assert rig.pulses() == [] and s.state == "ok"


def test_close_is_idempotent_and_frees_the_pin(rig):
    from gpiozero.exc import GPIOPinInUse

    s, line = rig.gpio()
    with pytest.raises(GPIOPinInUse):  # while the sensor holds the pin, nobody else gets it
        DigitalInputDevice(17, pin_factory=rig.factory)
    s.close()
    s.close()
    line.block()
    rig.ms(100)
    line.clear()
    assert rig.pulses() == []
    again = DigitalInputDevice(17, pin_factory=rig.factory)  # the pin is free again
    assert not again.closed
    again.close()
    assert s.closed
    s.tick(rig.clock.now())
    never_started, _ = rig.gpio(pin=22, start=False)
    never_started.close()
    never_started.close()


def test_bad_pin_gives_sensor_error(rig):
    s, _ = rig.gpio(pin="GPIO999", start=False)
    with pytest.raises(SensorError, match=r"sensor 'door': cannot open GPIO pin 'GPIO999'.*"
                                          r"BCM number") as info:
        s.start()
    assert type(info.value.__cause__).__name__ == "PinInvalidPin"
    assert s.state == "starting"
    s.close()


def test_pin_in_use_gives_sensor_error(rig):
    rig.gpio(pin=17)
    second, _ = rig.gpio(pin="GPIO17", start=False)
    with pytest.raises(SensorError, match="already used by another sensor"):
        second.start()


def test_fixed_pull_pin_gives_hint(rig):
    s, _ = rig.gpio(pin=2, pull_up=False, start=False)
    with pytest.raises(SensorError, match="fixed pull-ups: set pull_up = true"):
        s.start()


@pytest.mark.parametrize("kw", [
    {"direction": "sideways"},
    {"pull_up": None},
    {"min_pulse_ms": -1},
    {"holdoff_ms": -5},
    {"stuck_after_s": 0},
])
def test_invalid_options_are_rejected(rig, kw):
    with pytest.raises(SensorError, match="sensor 'door'"):
        rig.gpio(start=False, **kw)


def test_floating_input_with_explicit_polarity(rig):
    _, line = rig.gpio(pull_up=None, active_high=True)
    ts = rig.pulse(line, 100, 100)
    assert rig.pulses() == [Pulse("door", ts, "in", 1)]
    assert rig.factory.pin(17).pull == "floating"


# --- GPIOPairSensor -------------------------------------------------------------------


def test_pair_start_reports_ok(rig):
    s, _ = rig.pair()
    assert rig.events == [ok_event(rig, "gate", "listening on GPIO17 (A) and GPIO27 (B)")]
    assert s.status() == {"pin": "17,27", "pin_a": 17, "pin_b": 27, "state": "ok",
                          "active": False, "active_a": False, "active_b": False, "counted": 0,
                          "in": 0, "out": 0, "turn_backs": 0, "timeouts": 0, "noise": 0,
                          "chatter": 0, "stuck": 0}


@pytest.mark.parametrize(("script", "first", "direction"), [
    ("0 A+, 200 B+, 350 A-, 500 B-", "0 A+", "in"),  # overlapping beams
    ("0 A+, 250 A-, 600 B+, 850 B-", "0 A+", "in"),  # beams spaced apart
    ("0 B+, 200 A+, 350 B-, 500 A-", "0 B+", "out"),
    ("0 B+, 250 B-, 600 A+, 850 A-", "0 B+", "out"),
    ("0 A+, 200 B+, 400 A-, 400 B-", "0 A+", "in"),  # both clear at once
])
def test_pair_crossing(rig, script, first, direction):
    s, lines = rig.pair()
    rig.events.clear()
    walls = rig.play(lines, script)
    assert rig.events == [Pulse("gate", walls[first], direction, 1)]
    st = s.status()
    assert (st["in"], st["out"], st["turn_backs"], st["timeouts"]) == (
        int(direction == "in"), int(direction == "out"), 0, 0)


@pytest.mark.parametrize(("script", "direction"), [
    ("0 A+, 200 B+, 350 A-, 500 B-", "out"),
    ("0 B+, 200 A+, 350 B-, 500 A-", "in"),
])
def test_pair_invert_swaps_directions(rig, script, direction):
    _, lines = rig.pair(invert=True)
    walls = rig.play(lines, script)
    assert rig.pulses() == [Pulse("gate", walls[script.split(",")[0]], direction, 1)]


def test_pair_turn_back_after_touching_b_counts_nothing(rig):
    s, lines = rig.pair()
    rig.play(lines, "0 A+, 200 B+, 300 B-, 500 A-")
    rig.ms(5_000)
    s.tick(rig.clock.now())
    assert rig.pulses() == []
    assert s.status()["turn_backs"] == 1 and s.status()["timeouts"] == 0


def test_pair_a_alone_counts_nothing_and_times_out(rig):
    s, lines = rig.pair(max_transit_ms=1500)
    rig.play(lines, "0 A+, 300 A-")
    rig.ms(1100)
    s.tick(rig.clock.now())
    assert s.status()["timeouts"] == 0  # B could still come
    rig.ms(200)
    s.tick(rig.clock.now())
    assert rig.pulses() == []
    assert s.status()["timeouts"] == 1


def test_pair_transit_timeout_counts_nothing(rig):
    s, lines = rig.pair(max_transit_ms=1500)
    rig.play(lines, "0 A+, 300 A-, 1600 B+, 1900 B-")
    assert s.status()["timeouts"] == 1  # A gave up when B came too late
    rig.ms(2_000)
    s.tick(rig.clock.now())
    assert rig.pulses() == []
    assert s.status()["timeouts"] == 2 and s.status()["counted"] == 0


def test_pair_lingering_in_a_beyond_transit_counts_nothing(rig):
    s, lines = rig.pair(max_transit_ms=1500)
    rig.play(lines, "0 A+, 1600 B+, 1700 A-, 1900 B-")
    rig.ms(2_000)
    s.tick(rig.clock.now())
    assert rig.pulses() == []
    assert s.status()["timeouts"] == 2


def test_pair_transit_exactly_at_limit_counts(rig):
    _, lines = rig.pair(max_transit_ms=1500)
    walls = rig.play(lines, "0 A+, 300 A-, 1500 B+, 1800 B-")
    assert rig.pulses() == [Pulse("gate", walls["0 A+"], "in", 1)]


def test_pair_two_people_close_together(rig):
    s, lines = rig.pair()
    # person 2 enters A after person 1 left it but before person 1 left B
    walls = rig.play(lines, "0 A+, 200 B+, 300 A-, 400 A+, 500 B-, 550 B+, 650 A-, 850 B-")
    assert rig.pulses() == [Pulse("gate", walls["0 A+"], "in", 1),
                            Pulse("gate", walls["400 A+"], "in", 1)]
    assert s.status()["in"] == 2


def test_pair_two_people_with_spaced_beams(rig):
    s, lines = rig.pair()
    # person 2 enters A before person 1 reaches B
    walls = rig.play(lines, "0 A+, 300 A-, 600 A+, 800 B+, 900 A-, 1100 B-, 1400 B+, 1700 B-")
    assert rig.pulses() == [Pulse("gate", walls["0 A+"], "in", 1),
                            Pulse("gate", walls["600 A+"], "in", 1)]
    assert s.status()["turn_backs"] == s.status()["timeouts"] == 0


def test_pair_in_then_out(rig):
    _, lines = rig.pair()
    walls = rig.play(lines, "0 A+, 200 B+, 300 A-, 500 B-, 1000 B+, 1200 A+, 1300 B-, 1500 A-")
    assert rig.pulses() == [Pulse("gate", walls["0 A+"], "in", 1),
                            Pulse("gate", walls["1000 B+"], "out", 1)]


@pytest.mark.parametrize(("script", "timeouts"), [
    ("0 B+, 5 B-", 0),  # a glitch on B alone
    ("0 A+, 10 A-, 100 B+, 400 B-", 1),  # a glitch on A before a real B blocking
    ("0 A+, 100 B+, 102 B-, 300 A-", 1),  # a glitch on B during a real A blocking
    ("0 A+, 300 A-, 600 B+, 620 B-", 1),  # B too short to complete the crossing
])
def test_pair_noise_on_one_beam_makes_no_crossing(rig, script, timeouts):
    s, lines = rig.pair(min_pulse_ms=30)
    rig.play(lines, script)
    rig.ms(3_000)
    s.tick(rig.clock.now())
    assert rig.pulses() == []
    assert s.status()["noise"] == 1
    assert s.status()["timeouts"] == timeouts


def test_pair_noise_does_not_hide_a_crossing(rig):
    s, lines = rig.pair(min_pulse_ms=30)
    walls = rig.play(lines, "0 B+, 3 B-, 100 A+, 300 B+, 302 B-, 304 B+, 400 A-, 600 B-")
    assert rig.pulses() == [Pulse("gate", walls["100 A+"], "in", 1)]
    assert s.status()["noise"] == 2


def test_pair_glitch_just_after_a_clears_keeps_the_crossing(rig):
    s, lines = rig.pair(min_pulse_ms=30, holdoff_ms=50)
    walls = rig.play(lines, "0 A+, 200 B+, 300 A-, 310 A+, 315 A-, 500 B-")
    assert rig.pulses() == [Pulse("gate", walls["0 A+"], "in", 1)]
    assert s.status()["noise"] == 1 and s.status()["chatter"] == 0


def test_pair_dropouts_are_chatter_not_turn_backs(rig):
    s, lines = rig.pair(holdoff_ms=50)
    # A flickers while the person is in it; later B flickers: still one crossing "in"
    walls = rig.play(lines, "0 A+, 100 A-, 105 A+, 200 B+, 305 A-, 320 B-, 330 B+, 600 B-")
    assert rig.pulses() == [Pulse("gate", walls["0 A+"], "in", 1)]
    assert s.status()["chatter"] == 2
    # a dropout in A while turning back keeps it a turn-back
    rig.ms(3_000)
    rig.play(lines, "0 A+, 100 A-, 110 A+, 200 B+, 300 B-, 500 A-")
    rig.ms(3_000)
    s.tick(rig.clock.now())
    assert len(rig.pulses()) == 1
    assert s.status()["turn_backs"] == 1


def test_pair_stuck_beam(rig):
    s, lines = rig.pair(stuck_after_s=30)
    rig.events.clear()
    lines["A"].block()
    rig.ms(31_000)
    s.tick(rig.clock.now())
    assert rig.events == [SensorEvent("gate", T0 + 31, "state",
                                      "beam A (GPIO17) blocked for 31 s; not counting until it "
                                      "clears", "WARNING", "stuck")]
    rig.play(lines, "0 B+, 300 B-")  # someone walks through B alone
    rig.ms(2_000)
    s.tick(rig.clock.now())
    lines["A"].clear()
    assert rig.events[1:] == [SensorEvent("gate", rig.clock.now(), "state",
                                          "beam A (GPIO17) clear again after 33 s", "INFO", "ok")]
    st = s.status()
    assert (st["counted"], st["stuck"], st["timeouts"]) == (0, 1, 1)
    walls = rig.play(lines, "200 A+, 400 B+, 500 A-, 700 B-")
    assert rig.pulses() == [Pulse("gate", walls["200 A+"], "in", 1)]


def test_pair_both_beams_stuck(rig):
    s, lines = rig.pair(stuck_after_s=10)
    rig.events.clear()
    rig.play(lines, "0 A+, 100 B+")
    rig.ms(11_000)
    s.tick(rig.clock.now())
    assert [(e.kind, e.level, e.state) for e in rig.events] == [
        ("state", "WARNING", "stuck"), ("stuck", "WARNING", None)]
    lines["A"].clear()
    assert s.state == "stuck"
    lines["B"].clear()
    assert s.state == "ok"
    assert [e.message for e in rig.events[2:]] == [
        "beam A (GPIO17) clear again after 11 s", "beam B (GPIO27) clear again after 11 s"]
    assert rig.pulses() == []


def test_pair_both_beams_broken_at_start_are_ignored(rig):
    rig.factory.pin(17, pin_class=HeldLowPin)
    rig.factory.pin(27, pin_class=HeldLowPin)
    s, lines = rig.pair()
    assert s.status()["active_a"] and s.status()["active_b"]
    rig.play(lines, "300 A-, 600 B-")
    rig.ms(3_000)
    s.tick(rig.clock.now())
    assert rig.pulses() == []
    walls = rig.play(lines, "0 B+, 200 A+, 300 B-, 500 A-")
    assert rig.pulses() == [Pulse("gate", walls["0 B+"], "out", 1)]


def test_pair_one_beam_broken_at_start_can_complete(rig):
    rig.factory.pin(17, pin_class=HeldLowPin)
    _, lines = rig.pair()
    rig.play(lines, "100 B+, 200 A-, 400 B-")
    assert rig.pulses() == [Pulse("gate", T0, "in", 1)]


@pytest.mark.parametrize(("pin_a", "pin_b"), [(17, 17), (17, "GPIO17"), ("gpio17", "17")])
def test_pair_same_pin_is_rejected(rig, pin_a, pin_b):
    with pytest.raises(SensorError, match="sensor 'gate': pin_a and pin_b are both"):
        rig.pair(pin_a=pin_a, pin_b=pin_b, start=False)


def test_pair_bad_pin_gives_sensor_error_and_frees_the_other(rig):
    s, _ = rig.pair(pin_a=17, pin_b="GPIO999", start=False)
    with pytest.raises(SensorError, match="sensor 'gate': cannot open GPIO pin 'GPIO999'"):
        s.start()
    DigitalInputDevice(17, pin_factory=rig.factory).close()  # pin A was released
    s.close()


def test_pair_close_is_idempotent(rig):
    s, lines = rig.pair()
    s.close()
    s.close()
    rig.play(lines, "0 A+, 200 B+, 300 A-, 500 B-")
    s.tick(rig.clock.now())
    assert rig.pulses() == []


def test_pair_rejects_bad_transit(rig):
    with pytest.raises(SensorError, match="max_transit_ms"):
        rig.pair(max_transit_ms=0, start=False)
