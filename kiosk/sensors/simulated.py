"""A simulated door sensor: realistic visitor traffic for demos, tests and benchmarks.

Model
-----
Arrivals are a non-homogeneous Poisson process whose rate follows a daily profile
in *local* time (``timezone``, default Europe/Helsinki).  The reference is a city
service centre (Iso Omena, Espoo): 5,000–6,000 visitors on a weekday, about 2,000
on a weekend day.

* The rate is zero outside the opening hours of the day (``weekday_hours`` on
  Monday–Friday, ``weekend_hours`` on Saturday and Sunday).  Inside, it is a base
  level plus a lunch peak (centred 12:30, roughly 11:40–13:20) and a smaller
  afternoon peak (centred 16:45, roughly 16:05–17:25), ramped up over the first
  45 minutes after opening and down over the last hour before closing
  (:func:`traffic_shape`).
* **Per-minute integration.**  Each local day is cut into one-minute bins aligned
  to the day's local midnight (UTC seconds).  The shape is evaluated at the
  midpoint of each bin (converted to local wall time with :mod:`zoneinfo`); bins
  outside opening hours are dropped and the rest are scaled so that their sum is
  exactly the configured daily expectation.  Normalisation is per local day, so
  a 23-hour or 25-hour DST day still has the configured expectation (a repeated
  local hour simply contributes twice, a skipped one not at all).  Within a bin
  the rate is constant, so arrivals are drawn with exponential gaps (exact for a
  piecewise-constant rate; restarting at each bin edge is exact because the
  exponential is memoryless).  Cost: about 1,440 time-zone conversions per
  simulated day plus O(log n) heap work per visitor.  A 5,500-visit day takes
  about 20 ms in one ``advance_to`` call and about 50 ms when driven in 86,400
  one-second steps (x86 development machine; expect several times that on a Pi).
* Each arrival stays for a gamma(2)-distributed time with mean ``mean_stay_min``
  (fewer implausibly short visits than an exponential).  A visitor whose stay
  would run past closing time leaves at a uniformly random moment in the
  :attr:`SimulatedSensor.closing_grace_s` (15 minutes) after closing, so everyone
  who entered leaves the same evening.

Driving it
----------
:meth:`SimulatedSensor.advance_to` is the deterministic core: it generates and
emits, in time order, every pulse with a timestamp in ``(last_t, t]``, each
stamped with its own simulated time.  No threads and no sleeping, so a test or
benchmark can run a whole simulated day instantly.  The result depends only on
``seed`` and the start time, not on the step sizes used to get there: stays are
drawn when an arrival is generated, and arrivals are generated a whole minute bin
at a time in order.

:meth:`SimulatedSensor.start` runs the same thing from a daemon thread that
follows ``clock.now()``.  The process starts at ``clock.now()`` when
:meth:`start` is called (no burst of a past day).  If the clock steps by more than
:attr:`SimulatedSensor.max_catch_up_s` (NTP step, fake-hwclock restore), the
thread does not replay the gap: it calls :meth:`SimulatedSensor.resync`, which
lets the visitors inside leave, skips the arrivals of the gap and carries on from
the new time (a ``clock-jump`` :class:`~kiosk.events.SensorEvent` says so).
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

from kiosk.clock import Clock
from kiosk.config import DEVICE_KEYS, SENSOR_KEYS, Key, check_values, number_check, parse_hours
from kiosk.events import Emit, Pulse, SensorEvent
from kiosk.exc import ConfigError
from kiosk.sensors.base import Sensor

log = logging.getLogger(__name__)

__all__ = ["SimulatedSensor", "parse_hours", "traffic_shape"]

BIN_S = 60.0  # width of an integration bin (seconds)

# Shape of the daily profile (local wall-clock hours).
_BASE = 0.45
_LUNCH_H, _LUNCH_SD, _LUNCH_AMP = 12.5, 0.7, 1.0
_AFTERNOON_H, _AFTERNOON_SD, _AFTERNOON_AMP = 16.75, 0.55, 0.6
_OPEN_RAMP_H, _OPEN_FLOOR = 0.75, 0.5  # rate at opening is 50 % of the plateau
_CLOSE_RAMP_H, _CLOSE_FLOOR = 1.0, 0.35  # ... and 35 % just before closing

#: The constructor's options: the ``[[sensors]]`` keys of :data:`kiosk.config.SENSOR_KEYS`
#: plus two that the daemon sets itself (the zone of ``[device]`` and the thread's tick).
OPTION_KEYS: dict[str, Key] = {
    "timezone": DEVICE_KEYS["timezone"],
    **SENSOR_KEYS["simulated"],
    "tick_s": Key("tick_s", (int, float), 1.0, "a number of seconds > 0 and ≤ 60",
                  number_check(0, 60, lo_open=True), "clock seconds between thread wake-ups"),
}
#: Default of every option (taken from :data:`OPTION_KEYS`, written nowhere else).
DEFAULTS: dict[str, Any] = {k.name: k.default for k in OPTION_KEYS.values()}
_D = DEFAULTS


def _smoothstep(x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return x * x * (3.0 - 2.0 * x)


def traffic_shape(h: float, open_h: float, close_h: float) -> float:
    """Relative arrival rate at local wall-clock hour ``h`` (0 outside ``[open_h, close_h)``).

    Unnormalised; only its ratios matter.  Base level plus Gaussian lunch and
    afternoon peaks, with smooth ramps after opening and before closing.
    """
    if not open_h <= h < close_h:
        return 0.0
    level = (
        _BASE
        + _LUNCH_AMP * math.exp(-0.5 * ((h - _LUNCH_H) / _LUNCH_SD) ** 2)
        + _AFTERNOON_AMP * math.exp(-0.5 * ((h - _AFTERNOON_H) / _AFTERNOON_SD) ** 2)
    )
    ramp_in = _OPEN_FLOOR + (1.0 - _OPEN_FLOOR) * _smoothstep((h - open_h) / _OPEN_RAMP_H)
    ramp_out = _CLOSE_FLOOR + (1.0 - _CLOSE_FLOOR) * _smoothstep((close_h - h) / _CLOSE_RAMP_H)
    return level * ramp_in * ramp_out


@dataclass(frozen=True, slots=True)
class _DayPlan:
    """Expected arrivals per one-minute bin of one local day."""

    day: date
    start: float  # UTC second of local midnight
    end: float  # UTC second of the next local midnight
    weekend: bool
    visits: float  # expected arrivals over the day
    bins: list[tuple[float, float, float]]  # (utc_start, utc_end, expected) of open bins
    close: float | None  # UTC end of the last open bin


class SimulatedSensor(Sensor):
    """A door sensor that invents plausible traffic (see the module docstring).

    :param id: sensor id put on every pulse.
    :param emit: where messages go (usually ``queue.put``).
    :param clock: the :class:`~kiosk.clock.Clock` followed in thread mode; its
        ``now()`` at construction (and again at :meth:`start`, if nothing was
        simulated yet) is where the process starts.
    :param timezone: IANA zone of the opening hours.
    :param weekday_visits: expected arrivals on a Monday–Friday (≥ 0).
    :param weekend_visits: expected arrivals on a Saturday or Sunday (≥ 0).
    :param weekday_hours: opening hours ``"HH:MM-HH:MM"`` (local) on weekdays.
    :param weekend_hours: opening hours on weekend days.
    :param mean_stay_min: mean length of a visit in minutes (> 0).
    :param seed: seed of the private :class:`random.Random` (``None``: unpredictable).
    :param tick_s: clock seconds between wake-ups of the thread (> 0); raised to
        ``0.05 * clock.speed`` so a fast clock does not wake more than ~20 times a
        real second.

    Constructing is cheap and has no side effects (no events, no threads), so a
    config loader may validate options by constructing, or call
    :meth:`validate_options`.  Raises :class:`~kiosk.exc.ConfigError`.
    """

    kind = "simulated"

    #: visitors still inside at closing leave within this many seconds after it.
    closing_grace_s = 900.0
    #: in thread mode, a clock step larger than this (forwards, clock seconds) is
    #: not replayed but skipped with :meth:`resync`; see :meth:`_catch_up_limit`.
    max_catch_up_s = 3600.0

    def __init__(
        self,
        id: str,
        *,
        emit: Emit,
        clock: Clock,
        timezone: str = _D["timezone"],
        weekday_visits: float = _D["weekday_visits"],
        weekend_visits: float = _D["weekend_visits"],
        weekday_hours: str = _D["weekday_hours"],
        weekend_hours: str = _D["weekend_hours"],
        mean_stay_min: float = _D["mean_stay_min"],
        seed: int | None = _D["seed"],
        tick_s: float = _D["tick_s"],
    ) -> None:
        opts = self.validate_options(
            id,
            timezone=timezone,
            weekday_visits=weekday_visits,
            weekend_visits=weekend_visits,
            weekday_hours=weekday_hours,
            weekend_hours=weekend_hours,
            mean_stay_min=mean_stay_min,
            seed=seed,
            tick_s=tick_s,
        )
        super().__init__(id, emit=emit, clock=clock)
        self.options = opts
        self.tz = ZoneInfo(opts["timezone"])
        self.weekday_visits: float = opts["weekday_visits"]
        self.weekend_visits: float = opts["weekend_visits"]
        self.weekday_hours = parse_hours(opts["weekday_hours"])
        self.weekend_hours = parse_hours(opts["weekend_hours"])
        self.mean_stay_s: float = opts["mean_stay_min"] * 60.0
        self.seed: int | None = opts["seed"]
        self.tick_s: float = opts["tick_s"]

        self._rng = random.Random(self.seed)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._plans: dict[date, _DayPlan] = {}
        self.emitted_in = 0
        self.emitted_out = 0
        self._seq = 0
        self._heap: list[tuple[float, int, float | None]] = []
        self._reset(float(clock.now()))

    # -- options ---------------------------------------------------------------------

    @classmethod
    def validate_options(cls, id: str = "?", /, **options: Any) -> dict[str, Any]:
        """Check options (the constructor's keyword arguments except ``emit``/``clock``).

        Returns the options with defaults filled in and numbers as floats; raises
        :class:`~kiosk.exc.ConfigError` listing every problem, each naming the sensor.
        Types and ranges are those of :data:`OPTION_KEYS` (the config's schema), so
        options the config loader accepted are accepted here too.
        """
        opts, problems = check_values(OPTION_KEYS, options)
        if problems:
            raise ConfigError([f"sensor {id!r} (simulated): {p.key}: {p.text}" for p in problems])
        return opts

    # -- the daily profile -------------------------------------------------------------

    def _local_midnight(self, d: date) -> float:
        return datetime.combine(d, dtime(0), tzinfo=self.tz).timestamp()

    def local_date(self, t: float) -> date:
        """The local calendar date at UTC second ``t``."""
        return datetime.fromtimestamp(t, self.tz).date()

    def _plan(self, d: date) -> _DayPlan:
        plan = self._plans.get(d)
        if plan is not None:
            return plan
        weekend = d.weekday() >= 5
        visits = self.weekend_visits if weekend else self.weekday_visits
        open_h, close_h = self.weekend_hours if weekend else self.weekday_hours
        start = self._local_midnight(d)
        end = self._local_midnight(d + timedelta(days=1))
        raw: list[tuple[float, float, float]] = []
        if visits > 0:
            tz = self.tz
            b0 = start
            while b0 < end:
                b1 = min(b0 + BIN_S, end)
                lt = datetime.fromtimestamp((b0 + b1) / 2.0, tz)
                h = lt.hour + lt.minute / 60.0 + (lt.second + lt.microsecond / 1e6) / 3600.0
                w = traffic_shape(h, open_h, close_h) * (b1 - b0) / BIN_S
                if w > 0.0:
                    raw.append((b0, b1, w))
                b0 = b1
        total = sum(w for _, _, w in raw)
        bins = [(b0, b1, visits * w / total) for b0, b1, w in raw] if total > 0 else []
        plan = _DayPlan(d, start, end, weekend, visits, bins, bins[-1][1] if bins else None)
        if len(self._plans) > 8:
            self._plans.clear()
        self._plans[d] = plan
        return plan

    def expected_arrivals(self, start: float, end: float) -> float:
        """Expected number of arrivals with UTC timestamp in ``[start, end)``."""
        total = 0.0
        if end <= start:
            return total
        d = self.local_date(start)
        with self._lock:
            while True:
                plan = self._plan(d)
                if plan.start >= end:
                    break
                for b0, b1, lam in plan.bins:
                    lo, hi = max(b0, start), min(b1, end)
                    if hi > lo:
                        total += lam * (hi - lo) / (b1 - b0)
                d += timedelta(days=1)
        return total

    def expected_visits(self, d: date) -> float:
        """Expected arrivals on local date ``d`` (0 if no opening hours that day)."""
        with self._lock:
            plan = self._plan(d)
        return plan.visits if plan.bins else 0.0

    # -- the core ------------------------------------------------------------------------

    def _reset(self, t: float) -> None:
        """Start generating arrivals after ``t``; pending (unemitted) arrivals are dropped."""
        self._heap = [e for e in self._heap if e[2] is None]
        heapq.heapify(self._heap)
        self._last_t = t
        self._gen_from = t
        self._fresh = True
        self._cur = self._plan(self.local_date(t))
        self._bin_idx = 0
        bins = self._cur.bins
        while self._bin_idx < len(bins) and bins[self._bin_idx][1] <= t:
            self._bin_idx += 1
        self._frontier = bins[self._bin_idx][0] if self._bin_idx < len(bins) else self._cur.end

    def _generate_until(self, t: float) -> None:
        """Put every arrival with timestamp ≤ ``t`` on the heap (whole bins at a time)."""
        rng = self._rng
        heap = self._heap
        while self._frontier <= t:
            plan = self._cur
            if self._bin_idx >= len(plan.bins):
                self._cur = plan = self._plan(plan.day + timedelta(days=1))
                self._bin_idx = 0
                self._frontier = plan.bins[0][0] if plan.bins else plan.end
                continue
            b0, b1, lam = plan.bins[self._bin_idx]
            self._bin_idx += 1
            self._frontier = (
                plan.bins[self._bin_idx][0] if self._bin_idx < len(plan.bins) else plan.end
            )
            rate = lam / (b1 - b0)
            if rate <= 0.0:
                continue
            close = plan.close if plan.close is not None else b1
            ts = max(b0, self._gen_from)
            while True:
                ts += rng.expovariate(rate)
                if ts >= b1:
                    break
                exit_ts = ts + rng.gammavariate(2.0, self.mean_stay_s / 2.0)
                if exit_ts > close:
                    exit_ts = close + rng.uniform(0.0, self.closing_grace_s)
                self._seq += 1
                heapq.heappush(heap, (ts, self._seq, exit_ts))

    def advance_to(self, t: float) -> int:
        """Emit every pulse with timestamp in ``(last_t, t]``, in time order; return how many.

        Each pulse carries its own simulated timestamp.  ``t`` before the last
        ``t`` is a no-op (returns 0).  Deterministic for a given seed and start.
        """
        with self._lock:
            if t <= self._last_t:
                return 0
            self._fresh = False
            if self._frontier <= t:
                self._generate_until(t)
            heap = self._heap
            n = 0
            sid = self.id
            emit = self._emit_fn
            while heap and heap[0][0] <= t:
                ts, _, exit_ts = heapq.heappop(heap)
                if exit_ts is None:
                    emit(Pulse(sid, ts, "out", 1))
                    self.emitted_out += 1
                else:
                    emit(Pulse(sid, ts, "in", 1))
                    self.emitted_in += 1
                    self._seq += 1
                    heapq.heappush(heap, (exit_ts, self._seq, None))
                n += 1
            self._last_t = t
            return n

    def resync(self, t: float) -> int:
        """Follow a clock step to ``t`` without replaying the gap; return pulses emitted.

        Forwards: visitors inside whose exit falls in the gap leave at their own
        times (so ``in == out`` still holds), arrivals of the gap are skipped.
        Backwards: the exits of the visitors inside are moved back by the step (their
        stays are kept).  Generation then restarts after ``t``.
        """
        with self._lock:
            n = 0
            delta = t - self._last_t
            self._heap = [e for e in self._heap if e[2] is None]  # keep only exits
            heapq.heapify(self._heap)
            if delta >= 0:
                while self._heap and self._heap[0][0] <= t:
                    ts, _, _ = heapq.heappop(self._heap)
                    self._emit_fn(Pulse(self.id, ts, "out", 1))
                    self.emitted_out += 1
                    n += 1
            else:
                self._heap = [(ts + delta, seq, x) for ts, seq, x in self._heap]
            self._reset(t)
            return n

    # -- thread mode ---------------------------------------------------------------------

    def _tick_s(self) -> float:
        return max(self.tick_s, 0.05 * float(getattr(self.clock, "speed", 1.0)))

    def _catch_up_limit(self) -> float:
        return max(self.max_catch_up_s, 100.0 * self._tick_s())

    def start(self) -> None:
        """Start following ``clock.now()`` from a daemon thread.  Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"sensor {self.id!r} is closed")
            if self._thread is not None:
                return
            if self._fresh:  # nothing simulated yet: the process starts now
                self._reset(float(self.clock.now()))
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"kiosk-sim-{self.id}", daemon=True
            )
        self.set_state(
            "simulated",
            f"simulated traffic: {self.weekday_visits:g} weekday / "
            f"{self.weekend_visits:g} weekend visits per day",
        )
        self._thread.start()

    def _run(self) -> None:
        tick = self._tick_s()
        limit = self._catch_up_limit()
        try:
            while not self._stop.is_set():
                now = float(self.clock.now())
                gap = now - self._last_t
                if gap > limit or gap < -tick:
                    self.emit(
                        SensorEvent(
                            self.id,
                            now,
                            "clock-jump",
                            f"clock stepped by {gap:+.0f} s; simulated traffic resumes "
                            f"from the new time without replaying the gap",
                            "WARNING",
                        )
                    )
                    self.resync(now)
                else:
                    self.advance_to(now)
                if self.clock.wait(self._stop, tick):
                    break
        except Exception as e:  # pragma: no cover - defensive: never die silently
            log.exception("simulated sensor %s failed", self.id)
            self.set_state("down", f"simulator failed: {e}", level="ERROR")

    def _close(self) -> None:
        """Stop and join the thread.  Idempotent; safe if never started."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- introspection -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counters and today's expectation (local day of the last simulated time)."""
        with self._lock:
            t = self._last_t
            plan = self._plan(self.local_date(t))
            return {
                "kind": self.kind,
                "state": self.state,
                "emitted_in": self.emitted_in,
                "emitted_out": self.emitted_out,
                "inside": self.emitted_in - self.emitted_out,
                "expected_today": plan.visits if plan.bins else 0.0,
                "expected_so_far_today": self.expected_arrivals(plan.start, t),
                "today": plan.day.isoformat(),
                "weekend": plan.weekend,
                "last_t": t,
                "timezone": self.options["timezone"],
                "seed": self.seed,
                "running": self._thread is not None and self._thread.is_alive(),
            }
