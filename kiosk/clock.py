"""The one clock that everything reads time from.

Every component takes a :class:`Clock` so that tests and the demo can drive time
(DST days, clock jumps, accelerated hours) without sleeping.  All wall times are
UTC seconds since the Unix epoch (float); all durations are seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from kiosk.exc import ClockError


class Clock(Protocol):
    """What a clock offers.  ``now`` is wall time; ``monotonic`` never goes back."""

    speed: float

    def now(self) -> float:
        """UTC wall-clock time in seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (clock-time units)."""

    def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of clock time."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` of clock time for ``event``; return ``event.is_set()``."""

    def real_timeout(self, seconds: float) -> float:
        """Real seconds to block (e.g. on a queue) while ``seconds`` of clock time pass.

        A :class:`ManualClock` answers a short poll interval, so a loop blocking on a
        queue re-reads :meth:`monotonic` soon after a test advances the clock.
        """


class SystemClock:
    """The real clock of the machine."""

    speed = 1.0

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))

    def real_timeout(self, seconds: float) -> float:
        return max(0.0, seconds)


class ScaledClock:
    """A clock that runs ``speed`` times faster than real time from ``start``.

    :param start: UTC seconds at which simulated time begins (default: now).
    :param speed: simulated seconds per real second (> 0).
    """

    def __init__(self, *, start: float | None = None, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ClockError(f"clock speed must be > 0, got {speed!r}")
        self.speed = float(speed)
        self._start = time.time() if start is None else float(start)
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._mono0) * self.speed

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono0) * self.speed

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.speed)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds) / self.speed)

    def real_timeout(self, seconds: float) -> float:
        return max(0.0, seconds) / self.speed


class ManualClock:
    """A clock that moves only when told to (tests).

    ``sleep``/``wait`` block in real time until :meth:`advance` (from another
    thread) has moved the clock past their deadline, or the event is set.
    :meth:`jump` moves wall time without moving the monotonic clock, which is
    what an NTP step or a fake-hwclock restore looks like.
    """

    def __init__(self, start: float = 1_790_000_000.0, *, speed: float = 1.0) -> None:
        self.speed = speed
        self._wall = float(start)
        self._mono = 0.0
        self._cond = threading.Condition()

    def now(self) -> float:
        with self._cond:
            return self._wall

    def monotonic(self) -> float:
        with self._cond:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move wall and monotonic time forward by ``seconds``."""
        if seconds < 0:
            raise ClockError("ManualClock.advance takes a non-negative number of seconds")
        with self._cond:
            self._wall += seconds
            self._mono += seconds
            self._cond.notify_all()

    def jump(self, seconds: float) -> None:
        """Step wall time by ``seconds`` (either sign); monotonic time is unchanged."""
        with self._cond:
            self._wall += seconds
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    POLL_S = 0.005  #: Real seconds a queue wait blocks before the clock is read again.

    def real_timeout(self, seconds: float) -> float:
        return min(max(0.0, seconds), self.POLL_S)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._cond:
            deadline = self._mono + max(0.0, seconds)
            while self._mono < deadline and not event.is_set():
                self._cond.wait(0.01)
        return event.is_set()
