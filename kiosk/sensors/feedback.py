"""A feedback terminal: two to five large buttons by the exit, best answer first
(very happy ... very unhappy), and an optional "thank you" light.

Each button is a gpiozero input debounced exactly like a beam (:class:`kiosk.sensors.gpio._Beam`:
noise shorter than ``min_pulse_ms``, contact chatter within ``holdoff_ms``).  A press is judged
when it is released:

* held longer than ``stuck_after_s``: a **stuck** button (jammed, a cable shorted): state
  "stuck" (WARNING) while it is held, and never an answer;
* starting less than ``lockout_s`` after the terminal's previous press (any button, answer or
  repeated): a **repeated** press.  It is kept (:class:`~kiosk.events.Answer` with
  ``repeated=True``) but left out of every score, so a child pressing twenty times in a row
  gives one answer and nineteen repeated presses.  The lock-out runs from the latest press,
  so a long burst stays one answer however long it lasts;
* anything else is one **answer**; the light (``led_pin``) is lit for ``led_s``.

The Answer's timestamp is the start of the press (``clock.now()``); durations are measured on
``clock.monotonic()``.  Callbacks only read the clock, update a few numbers under a lock and
emit; the light is switched off by :meth:`FeedbackSensor.tick` (every ~0.5 s).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from kiosk.clock import Clock
from kiosk.config import SENSOR_KEYS, pin_key
from kiosk.events import Answer, Emit, SensorEvent
from kiosk.exc import SensorError
from kiosk.sensors.base import Sensor
from kiosk.sensors.gpio import _EPS, _Beam, _check, _open_input

_KEYS = SENSOR_KEYS["feedback"]


class FeedbackSensor(Sensor):
    """A row of answer buttons on GPIO pins (see the module docstring).

    :param buttons: level name -> pin, best level first (2–5 levels).
    :param led_pin: optional output pin of a "thank you" light (active high).
    :param led_s: seconds the light stays on after an answer.
    :param lockout_s: a press less than this (s) after the previous press is "repeated".
    :param pull_up: internal pull-up (True: buttons wired from the pin to ground).
    :param active_high: line level while pressed; default ``not pull_up``.
    :param min_pulse_ms: presses shorter than this (ms) are noise.
    :param holdoff_ms: a press of the same button within this (ms) after its previous
        release is contact chatter.
    :param stuck_after_s: a press held longer than this (s) is a stuck button, not an answer.
    :param pin_factory: a gpiozero pin factory (tests pass ``MockFactory()``).
    """

    kind = "feedback"

    def __init__(self, id: str, *, buttons: dict[str, int | str], emit: Emit, clock: Clock,
                 led_pin: int | str | None = None,
                 led_s: float = _KEYS["led_s"].default,
                 lockout_s: float = _KEYS["lockout_s"].default,
                 pull_up: bool | None = _KEYS["pull_up"].default,
                 active_high: bool | None = _KEYS["active_high"].default,
                 min_pulse_ms: float = _KEYS["min_pulse_ms"].default,
                 holdoff_ms: float = _KEYS["holdoff_ms"].default,
                 stuck_after_s: float = _KEYS["stuck_after_s"].default,
                 pin_factory: Any = None) -> None:
        super().__init__(id, emit=emit, clock=clock)
        t = _check(id, _KEYS, {"buttons": buttons, "led_s": led_s, "lockout_s": lockout_s,
                               "min_pulse_ms": min_pulse_ms, "holdoff_ms": holdoff_ms,
                               "stuck_after_s": stuck_after_s,
                               **({"led_pin": led_pin} if led_pin is not None else {})})
        if pull_up is None and active_high is None:
            raise SensorError(
                f"sensor {id!r}: a floating input (pull_up = none) needs active_high")
        self.buttons: dict[str, int] = t["buttons"]
        self.levels = tuple(self.buttons)
        self.led_pin: int | None = t.get("led_pin")
        if self.led_pin is not None and self.led_pin in self.buttons.values():
            raise SensorError(f"sensor {id!r}: led_pin {led_pin!r} is also a button's pin")
        self.led_s, self.lockout_s = t["led_s"], t["lockout_s"]
        self.pull_up = pull_up
        self.active_high = not pull_up if active_high is None else bool(active_high)
        timing = (t["min_pulse_ms"] / 1000, t["holdoff_ms"] / 1000, t["stuck_after_s"])
        self._beams = [_Beam(f"button {name!r} ({pin_key(pin)})", *timing)
                       for name, pin in self.buttons.items()]
        self._pin_factory = pin_factory
        self._lock = threading.Lock()
        self._devices: list[Any] = []
        self._led: Any = None
        self._led_until: float | None = None
        self._last_press: float | None = None  # monotonic start of the latest accepted press
        self._closed = False
        self.answers = [0] * len(self.levels)
        self.repeated = [0] * len(self.levels)

    def start(self) -> None:
        """Open the buttons (and the light); raises :class:`SensorError` naming the pin."""
        if self._devices or self._closed:
            return
        held = []
        try:
            for i, pin in enumerate(self.buttons.values()):
                device, active = _open_input(
                    self.id, pin, pull_up=self.pull_up, active_high=self.active_high,
                    pin_factory=self._pin_factory, on_edge=functools.partial(self._edge, i))
                self._devices.append(device)
                held.append(active)
            if self.led_pin is not None:
                self._led = self._open_led(self.led_pin)
        except SensorError:
            for device in self._devices:
                device.close()
            self._devices = []
            raise
        pins = ", ".join(f"{name} {pin_key(pin)}" for name, pin in self.buttons.items())
        self.set_state("ok", f"listening on {len(self.levels)} buttons ({pins})")
        for i, active in enumerate(held):
            if active:  # held at start: its release is judged like any press (often stuck)
                self._edge(i, True)

    def _open_led(self, pin: int) -> Any:
        try:
            from gpiozero import LED

            return LED(pin, pin_factory=self._pin_factory)
        except Exception as e:
            raise SensorError(f"sensor {self.id!r}: cannot open the light's GPIO pin {pin!r}: "
                              f"{e}") from e

    def _edge(self, i: int, active: bool) -> None:
        mono, wall = self.clock.monotonic(), self.clock.now()
        with self._lock:
            if self._closed:
                return
            beam = self._beams[i]
            if active:
                beam.activate(mono, wall)
                return
            verdict = beam.release(mono)
            if verdict == "pulse":
                self._press(i, beam)
            elif verdict == "stuck":
                msg = f"{beam.label} released after {mono - beam.since:.0f} s (not an answer)"
                if any(b.stuck for b in self._beams):
                    self.emit(SensorEvent(self.id, wall, "stuck", msg))
                else:
                    self.set_state("ok", msg)

    def _press(self, i: int, beam: _Beam) -> None:
        """One press of button ``i`` (under the lock): an answer or a repeated press."""
        last, self._last_press = self._last_press, beam.since
        repeated = last is not None and beam.since - last < self.lockout_s - _EPS
        (self.repeated if repeated else self.answers)[i] += 1
        self.emit(Answer(self.id, beam.since_wall, self.levels[i], i, len(self.levels),
                         repeated))
        if not repeated and self._led is not None:
            self._led.on()
            self._led_until = self.clock.monotonic() + self.led_s

    def tick(self, now: float) -> None:
        """Report stuck buttons and switch the light off (``now``: wall time, UTC s)."""
        with self._lock:
            if self._closed or not self._devices:
                return
            mono = self.clock.monotonic()
            if self._led_until is not None and mono >= self._led_until - _EPS:
                self._led.off()
                self._led_until = None
            for beam in self._beams:
                held = beam.check_stuck(mono)
                if held is None:
                    continue
                msg = f"{beam.label} held for {held:.0f} s: a stuck button, not answers"
                if self.state == "stuck":
                    self.emit(SensorEvent(self.id, self.clock.now(), "stuck", msg, "WARNING"))
                else:
                    self.set_state("stuck", msg, level="WARNING")

    @property
    def led_lit(self) -> bool:
        """True while the "thank you" light is on."""
        with self._lock:
            return self._led_until is not None

    def status(self) -> dict[str, Any]:
        """Levels, answers and repeated presses per level since start, and faults."""
        with self._lock:
            return {"state": self.state, "levels": list(self.levels),
                    "pins": dict(self.buttons), "led_pin": self.led_pin,
                    "answers": dict(zip(self.levels, self.answers, strict=True)),
                    "repeated": dict(zip(self.levels, self.repeated, strict=True)),
                    "counted": sum(self.answers),
                    "active": any(b.active for b in self._beams),
                    "noise": sum(b.noise for b in self._beams),
                    "chatter": sum(b.chatter for b in self._beams),
                    "stuck": sum(b.stuck_count for b in self._beams)}

    def _close(self) -> None:
        """Release the pins and put the light out (idempotent)."""
        with self._lock:
            self._closed = True
            devices, self._devices = self._devices, []
            led, self._led = self._led, None
        for device in devices:
            device.close()
        if led is not None:
            led.off()
            led.close()
