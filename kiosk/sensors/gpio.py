"""GPIO sensors: one beam or door contact (:class:`GPIOSensor`) and a pair of beams that
also tells the walking direction (:class:`GPIOPairSensor`).

Both sit on gpiozero's ``DigitalInputDevice``.  Its callbacks run in gpiozero's thread
(lgpio's notify thread on a Pi): they read the clock, update a few numbers under a lock
and hand messages to ``emit``.  They never do I/O.

Debouncing is ours, not gpiozero's (``bounce_time`` is not used: MockPin ignores it and
lgpio's drops real edges, gpiozero#1039).  "Active" means beam broken or door open.
Each *blocking* of a beam (from active to inactive again) is judged when it ends:

* shorter than ``min_pulse_ms``: **noise**, ignored as if it never happened;
* starting less than ``holdoff_ms`` after the end of the beam's previous non-noise
  blocking (counted, chatter or stuck): **chatter**, the same visitor as that blocking
  (a flicker while someone is in the beam); never counted, and the hold-off now runs
  from its end;
* longer than ``stuck_after_s``: a **stuck** beam (blocked by a box, knocked out of
  line), never counted;
* anything else is a visitor.

The defaults (30 ms, 50 ms) suit a door: a walking person blocks a beam for 150 ms or
more, while a clean 10 Hz train of 50 ms pulses with 50 ms gaps still counts every pulse.
Durations are measured on ``clock.monotonic()``; Pulse timestamps are ``clock.now()``
at the start of the blocking.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiosk.clock import Clock
from kiosk.config import SENSOR_KEYS, Key, check_values, pin_key
from kiosk.events import Direction, Emit, Pulse, SensorEvent
from kiosk.exc import SensorError
from kiosk.sensors.base import Sensor

_EPS = 1e-6  # s: slack for float arithmetic on clock readings

_HINTS = {
    "PinInvalidPin": "use a BCM number such as 17 or a name such as 'GPIO17'",
    "GPIOPinInUse": "the pin is already used by another sensor of this daemon or another program",
    "PinFixedPull": "GPIO2/GPIO3 have fixed pull-ups: set pull_up = true or use another pin",
}
_DEFAULT_HINT = (
    "is the service user in group 'gpio'? is GPIOZERO_PIN_FACTORY=lgpio installed "
    "(apt install python3-lgpio)? is another program using the pin?"
)


#: The GPIO character devices a board has (a module attribute so tests can point it elsewhere).
GPIOCHIP_GLOB = "/dev/gpiochip*"
_board_lock = threading.Lock()
_board_factory: Any = None


def board_pin_factory(sensor_id: str) -> Any:
    """The process's one hardware pin factory (lgpio), made on first use.

    gpiozero's own default tries four factories in turn: each failure is a
    ``PinFactoryFallback`` warning, pigpio prints its ``%%%% Can't connect to pigpio``
    banner on stdout, and importing lgpio leaves a ``.lgd-nfy`` pipe in the current
    directory.  So we look for a board first (``/dev/gpiochip*``) and, if there is one,
    make lgpio's factory only, with lgpio's pipes in ``$LG_WD`` (the unit sets it to the
    state directory; otherwise a private temporary directory removed at exit).

    Returns None when ``$GPIOZERO_PIN_FACTORY`` names another factory (gpiozero then
    loads that one alone, without fallbacks).  Raises :class:`SensorError` with one
    plain line when there is no board or lgpio cannot be used.
    """
    global _board_factory
    name = os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    if name and name != "lgpio":
        return None
    with _board_lock:
        if _board_factory is not None:
            return _board_factory
        if not glob.glob(GPIOCHIP_GLOB):
            raise SensorError(
                f"sensor {sensor_id!r}: no GPIO board found (no {GPIOCHIP_GLOB} on this "
                f"machine; is this a Raspberry Pi?); use a serial or simulated sensor here")
        if not os.environ.get("LG_WD"):
            workdir = tempfile.mkdtemp(prefix="kiosk-lgpio-")
            atexit.register(shutil.rmtree, workdir, True)
            os.environ["LG_WD"] = workdir  # read by lgpio's C library when it is loaded
        try:
            from gpiozero.pins.lgpio import LGPIOFactory
        except ImportError as e:
            raise SensorError(
                f"sensor {sensor_id!r}: the lgpio library is missing ({e}); on Raspberry Pi "
                f"OS: sudo apt install python3-lgpio (see docs/install.md)") from None
        try:
            _board_factory = LGPIOFactory()
        except Exception as e:
            if type(e).__name__ == "PinUnknownPi":
                hint = "gpiozero does not know this board: is it a Raspberry Pi?"
            elif isinstance(e, PermissionError) or "ermission" in str(e):
                hint = "is the service user in group 'gpio'?"
            else:
                hint = "is another program using the GPIO chip?"
            raise SensorError(f"sensor {sensor_id!r}: cannot use the GPIO board: {e} ({hint})") from None
        return _board_factory


_KEYS = SENSOR_KEYS["gpio"]
_PAIR_KEYS = SENSOR_KEYS["gpio-pair"]


def _pin_name(pin: int | str) -> str:
    """``"GPIO17"`` for 17, "17", "GPIO17" or "BCM17" (the config's one pin normaliser)."""
    return pin_key(pin)


def _check(sensor_id: str, keys: dict[str, Key], values: dict[str, Any]) -> dict[str, Any]:
    """The config's checks of ``values`` (:data:`kiosk.config.SENSOR_KEYS`); SensorError if bad."""
    checked, problems = check_values(keys, values)
    if problems:
        raise SensorError(f"sensor {sensor_id!r}: "
                          + "; ".join(f"{p.key}: {p.text}" for p in problems))
    return checked


def _open_input(sensor_id: str, pin: int | str, *, pull_up: bool | None, active_high: bool,
                pin_factory: Any, on_edge: Callable[[bool], None]) -> tuple[Any, bool]:
    """Open ``pin`` as an input whose edges call ``on_edge(active)``.

    Returns the device and whether the line is active right now.
    """
    if pin_factory is None:
        pin_factory = board_pin_factory(sensor_id)
    try:
        from gpiozero import DigitalInputDevice

        if pull_up is None:
            device = DigitalInputDevice(pin, pull_up=None, active_state=active_high,
                                        pin_factory=pin_factory)
            inverted = False
        else:
            # gpiozero forbids active_state with a pull: it calls a pulled-up pin active
            # when low, so swap its events when our polarity differs.
            device = DigitalInputDevice(pin, pull_up=pull_up, pin_factory=pin_factory)
            inverted = active_high == pull_up
    except Exception as e:
        hint = _HINTS.get(type(e).__name__, _DEFAULT_HINT)
        raise SensorError(
            f"sensor {sensor_id!r}: cannot open GPIO pin {pin!r}: {e} ({hint})") from e
    device.when_activated = functools.partial(on_edge, not inverted)
    device.when_deactivated = functools.partial(on_edge, inverted)
    return device, device.is_active != inverted


class _Beam:
    """Debounce state of one input line (times in monotonic seconds)."""

    def __init__(self, label: str, min_pulse_s: float, holdoff_s: float, stuck_after_s: float):
        self.label = label
        self.min_pulse_s, self.holdoff_s, self.stuck_after_s = min_pulse_s, holdoff_s, stuck_after_s
        self.active = False
        self.since = self.since_wall = 0.0
        self.chatter_start = False  # the current blocking began within holdoff
        self.last_end: float | None = None
        self.stuck = False
        self.noise = self.chatter = self.stuck_count = 0

    def activate(self, mono: float, wall: float) -> bool:
        """Start a blocking; False if the beam was already active."""
        if self.active:
            return False
        self.active, self.since, self.since_wall = True, mono, wall
        gap = None if self.last_end is None else mono - self.last_end
        self.chatter_start = gap is not None and gap < self.holdoff_s - _EPS
        return True

    def release(self, mono: float) -> str | None:
        """End a blocking and judge it: "stuck", "noise", "chatter", "pulse" (None: no edge)."""
        if not self.active:
            return None
        self.active = False
        held = mono - self.since
        if self.stuck or held > self.stuck_after_s + _EPS:
            self.stuck, self.last_end = False, mono
            self.stuck_count += 1
            return "stuck"
        if held < self.min_pulse_s - _EPS:
            self.noise += 1
            return "noise"
        self.last_end = mono
        if self.chatter_start:
            self.chatter += 1
            return "chatter"
        return "pulse"

    def check_stuck(self, mono: float) -> float | None:
        """Mark the beam stuck once blocked > stuck_after_s; return the seconds blocked."""
        if self.active and not self.stuck and mono - self.since > self.stuck_after_s + _EPS:
            self.stuck = True
            return mono - self.since
        return None


def _options(sensor_id: str, pull_up: bool | None, active_high: bool | None,
             min_pulse_ms: float, holdoff_ms: float, stuck_after_s: float) -> tuple[bool, ...]:
    """Check the common options; return (active_high, min_pulse_s, holdoff_s, stuck_after_s)."""
    if pull_up is None and active_high is None:
        raise SensorError(
            f"sensor {sensor_id!r}: a floating input (pull_up = none) needs active_high")
    t = _check(sensor_id, _KEYS, {"min_pulse_ms": min_pulse_ms, "holdoff_ms": holdoff_ms,
                                  "stuck_after_s": stuck_after_s})
    active = not pull_up if active_high is None else bool(active_high)
    return active, t["min_pulse_ms"] / 1000, t["holdoff_ms"] / 1000, t["stuck_after_s"]


class GPIOSensor(Sensor):
    """One beam or door contact on one pin; every visitor blocking counts once.

    :param pin: BCM number (17) or name ("GPIO17").
    :param pull_up: use the internal pull-up (True), pull-down (False) or none (None).
    :param active_high: the line is high while the beam is broken; default ``not pull_up``
        (an open-collector output pulled up reads low when broken).
    :param min_pulse_ms: blockings shorter than this (ms) are noise.
    :param holdoff_ms: a blocking that starts less than this (ms) after the end of the
        previous one is chatter of the same visitor.  10 Hz pulses of 50 ms need ≤ 50.
    :param stuck_after_s: a blocking longer than this (s) is a stuck beam: state "stuck"
        (WARNING), and its release is not counted.
    :param direction: "in" or "out", written on every Pulse.
    :param pin_factory: a gpiozero pin factory (tests pass ``MockFactory()``).
    """

    kind = "gpio"

    def __init__(self, id: str, *, pin: int | str, emit: Emit, clock: Clock,
                 pull_up: bool | None = _KEYS["pull_up"].default,
                 active_high: bool | None = _KEYS["active_high"].default,
                 min_pulse_ms: float = _KEYS["min_pulse_ms"].default,
                 holdoff_ms: float = _KEYS["holdoff_ms"].default,
                 stuck_after_s: float = _KEYS["stuck_after_s"].default,
                 direction: Direction = _KEYS["direction"].default,
                 pin_factory: Any = None) -> None:
        super().__init__(id, emit=emit, clock=clock)
        _check(id, _KEYS, {"direction": direction})
        self.active_high, *timing = _options(id, pull_up, active_high, min_pulse_ms,
                                             holdoff_ms, stuck_after_s)
        self._beam = _Beam(f"{_pin_name(pin)} beam", *timing)
        self.pin, self.pull_up, self.direction = pin, pull_up, direction
        self._pin_factory = pin_factory
        self._lock = threading.Lock()
        self._device: Any = None
        self._closed = False
        self._counted = 0

    def start(self) -> None:
        """Open the pin; raises :class:`SensorError` naming the sensor and pin on failure."""
        if self._device is not None or self._closed:
            return
        device, active = _open_input(self.id, self.pin, pull_up=self.pull_up,
                                     active_high=self.active_high, pin_factory=self._pin_factory,
                                     on_edge=self._edge)
        self._device = device
        self.set_state("ok", f"listening on {_pin_name(self.pin)}"
                       + (" (beam blocked at start)" if active else ""))
        if active:
            self._edge(True)

    def _edge(self, active: bool) -> None:
        mono, wall = self.clock.monotonic(), self.clock.now()
        with self._lock:
            if self._closed:
                return
            beam = self._beam
            if active:
                beam.activate(mono, wall)
                return
            verdict = beam.release(mono)
            if verdict == "pulse":
                self._counted += 1
                self.emit(Pulse(self.id, beam.since_wall, self.direction, 1))
            elif verdict == "stuck":
                self.set_state("ok", f"{beam.label} clear again after {mono - beam.since:.0f} s")

    def tick(self, now: float) -> None:
        """Report a stuck beam (``now`` is wall time, UTC s; durations use monotonic time)."""
        with self._lock:
            if self._closed or self._device is None:
                return
            held = self._beam.check_stuck(self.clock.monotonic())
            if held is not None:
                self.set_state("stuck", f"{self._beam.label} blocked for {held:.0f} s; "
                               "not counting until it clears", level="WARNING")

    def status(self) -> dict[str, Any]:
        """Pin, whether the beam is broken now, and counters since start."""
        with self._lock:
            b = self._beam
            return {"pin": self.pin, "state": self.state, "active": b.active,
                    "counted": self._counted, "noise": b.noise, "chatter": b.chatter,
                    "stuck": b.stuck_count}

    def _close(self) -> None:
        """Release the pin (idempotent)."""
        with self._lock:
            self._closed = True
            device, self._device = self._device, None
        if device is not None:
            device.close()


@dataclass(eq=False)
class _Segment:
    """One visitor blocking of one beam (monotonic s; ``off`` is None while blocked)."""

    beam: int  # 0 = A, 1 = B
    on: float
    on_wall: float
    off: float | None = None
    reopened_from: float | None = None  # ``off`` before a chatter blocking reopened it
    done: bool = False  # matched or given up


class GPIOPairSensor(Sensor):
    """Two beams A and B a few cm apart: A then B is "in", B then A is "out".

    Each beam is debounced as in :class:`GPIOSensor`, and its visitor blockings queue up
    (a chatter blocking extends the one before it).  The oldest blockings of A and B are
    paired, first come first served, so people in a row count one each.  The earlier
    of the two is the entry beam; the other must activate within ``max_transit_ms`` of
    it.  Once both have cleared, the pair is a crossing if the entry beam cleared first
    (overlapping: A on, B on, A off, B off; spaced apart: A on, A off, B on, B off), and
    a *turn-back* if it cleared last (A on, B on, B off, A off).  A blocking that the
    other beam does not follow in time is a *timeout* (someone broke one beam and left,
    or lingered in it).  The Pulse is emitted when the pair is decided (the second beam
    clears) and carries the entry beam's activation time.  Noise never enters the
    queues, so it cannot start or complete a crossing.  If both beams are broken at
    start, those blockings are ignored (the entry side is unknown).

    Limitation: a lone blocking is paired with the other beam's next blocking for up to
    ``max_transit_ms``, so a turn-back followed that quickly by someone walking the other
    way can be counted in the turn-back's direction.

    :param max_transit_ms: most time (ms) from the entry beam's activation to the other's.
    :param invert: swap "in" and "out" (beams mounted the other way round).

    The other options are those of :class:`GPIOSensor`.
    """

    kind = "gpio-pair"

    def __init__(self, id: str, *, pin_a: int | str, pin_b: int | str, emit: Emit,
                 clock: Clock, pull_up: bool | None = _PAIR_KEYS["pull_up"].default,
                 active_high: bool | None = _PAIR_KEYS["active_high"].default,
                 min_pulse_ms: float = _PAIR_KEYS["min_pulse_ms"].default,
                 holdoff_ms: float = _PAIR_KEYS["holdoff_ms"].default,
                 stuck_after_s: float = _PAIR_KEYS["stuck_after_s"].default,
                 max_transit_ms: float = _PAIR_KEYS["max_transit_ms"].default,
                 invert: bool = _PAIR_KEYS["invert"].default,
                 pin_factory: Any = None) -> None:
        super().__init__(id, emit=emit, clock=clock)
        if _pin_name(pin_a) == _pin_name(pin_b):
            raise SensorError(f"sensor {id!r}: pin_a and pin_b are both {pin_a!r}; "
                              "a beam pair needs two different pins")
        max_transit_ms = _check(id, _PAIR_KEYS, {"max_transit_ms": max_transit_ms})[
            "max_transit_ms"]
        self.active_high, *timing = _options(id, pull_up, active_high, min_pulse_ms,
                                             holdoff_ms, stuck_after_s)
        self._beams = (_Beam(f"beam A ({_pin_name(pin_a)})", *timing),
                       _Beam(f"beam B ({_pin_name(pin_b)})", *timing))
        self.pins = (pin_a, pin_b)
        self.pull_up, self.invert = pull_up, invert
        self.max_transit_s = max_transit_ms / 1000
        self._pin_factory = pin_factory
        self._lock = threading.Lock()
        self._devices: list[Any] = []
        self._closed = False
        self._queues: tuple[list[_Segment], list[_Segment]] = ([], [])
        self._current: list[_Segment | None] = [None, None]  # segment of the ongoing blocking
        self._last: list[_Segment | None] = [None, None]  # newest segment of each beam
        self._counts = {"in": 0, "out": 0, "turn_backs": 0, "timeouts": 0}

    def start(self) -> None:
        """Open both pins; raises :class:`SensorError` naming the sensor and pin on failure."""
        if self._devices or self._closed:
            return
        active = []
        try:
            for i, pin in enumerate(self.pins):
                device, now_active = _open_input(
                    self.id, pin, pull_up=self.pull_up, active_high=self.active_high,
                    pin_factory=self._pin_factory, on_edge=functools.partial(self._edge, i))
                self._devices.append(device)
                active.append(now_active)
        except SensorError:
            for device in self._devices:
                device.close()
            self._devices = []
            raise
        self.set_state("ok", f"listening on {_pin_name(self.pins[0])} (A) and "
                       f"{_pin_name(self.pins[1])} (B)")
        for i in (0, 1):
            if active[i]:
                self._edge(i, True, ignore=all(active))

    def _edge(self, i: int, active: bool, *, ignore: bool = False) -> None:
        mono, wall = self.clock.monotonic(), self.clock.now()
        with self._lock:
            if self._closed:
                return
            beam = self._beams[i]
            if active:
                if not beam.activate(mono, wall):
                    return
                last, seg = self._last[i], None
                if not beam.chatter_start and not ignore:
                    seg = self._last[i] = _Segment(i, mono, wall)
                    self._queues[i].append(seg)
                elif beam.chatter_start and last is not None and not last.done:
                    seg, last.reopened_from, last.off = last, last.off, None
                self._current[i] = seg
            else:
                verdict = beam.release(mono)
                if verdict is None:
                    return
                seg, self._current[i] = self._current[i], None
                if seg is not None and not seg.done:
                    if verdict in ("pulse", "chatter"):
                        seg.off, seg.reopened_from = mono, None
                    elif verdict == "noise" and seg.reopened_from is not None:
                        seg.off, seg.reopened_from = seg.reopened_from, None
                    else:
                        self._drop(seg)
                if verdict == "stuck":
                    msg = f"{beam.label} clear again after {mono - beam.since:.0f} s"
                    if any(b.stuck for b in self._beams):
                        self.emit(SensorEvent(self.id, wall, "stuck", msg))
                    else:
                        self.set_state("ok", msg)
            self._match(mono)

    def _drop(self, seg: _Segment) -> None:
        seg.done = True
        queue = self._queues[seg.beam]
        if seg in queue:
            queue.remove(seg)

    def _match(self, now: float) -> None:
        """Pair the oldest blockings of A and B into crossings (under the lock)."""
        qa, qb = self._queues
        while qa or qb:
            if qa and (not qb or qa[0].on <= qb[0].on):
                first, second = qa[0], (qb[0] if qb else None)
            else:
                first, second = qb[0], (qa[0] if qa else None)
            deadline = first.on + self.max_transit_s + _EPS
            if second is None or second.on > deadline:
                if second is None and now <= deadline:
                    return  # the other beam may still come
                self._drop(first)
                self._counts["timeouts"] += 1
                continue
            if first.off is None or second.off is None:
                return  # wait until both have cleared
            self._drop(first)
            self._drop(second)
            if first.off > second.off + _EPS:
                self._counts["turn_backs"] += 1
                continue
            direction: Direction = "in" if (first.beam == 0) != self.invert else "out"
            self._counts[direction] += 1
            self.emit(Pulse(self.id, first.on_wall, direction, 1))

    def tick(self, now: float) -> None:
        """Report stuck beams and give up on overdue crossings (``now``: wall time, UTC s)."""
        with self._lock:
            if self._closed or not self._devices:
                return
            mono = self.clock.monotonic()
            for i, beam in enumerate(self._beams):
                held = beam.check_stuck(mono)
                if held is None:
                    continue
                seg = self._current[i]
                if seg is not None and not seg.done:
                    self._drop(seg)
                msg = f"{beam.label} blocked for {held:.0f} s; not counting until it clears"
                if self.state == "stuck":
                    self.emit(SensorEvent(self.id, self.clock.now(), "stuck", msg, "WARNING"))
                else:
                    self.set_state("stuck", msg, level="WARNING")
            self._match(mono)

    def status(self) -> dict[str, Any]:
        """Pins, which beams are broken now, and counters since start."""
        with self._lock:
            a, b = self._beams
            return {"pin": f"{self.pins[0]},{self.pins[1]}", "pin_a": self.pins[0],
                    "pin_b": self.pins[1], "state": self.state, "active": a.active or b.active,
                    "active_a": a.active, "active_b": b.active,
                    "counted": self._counts["in"] + self._counts["out"], **self._counts,
                    "noise": a.noise + b.noise, "chatter": a.chatter + b.chatter,
                    "stuck": a.stuck_count + b.stuck_count}

    def _close(self) -> None:
        """Release both pins (idempotent)."""
        with self._lock:
            self._closed = True
            devices, self._devices = self._devices, []
        for device in devices:
            device.close()
