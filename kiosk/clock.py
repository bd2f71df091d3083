"""The one clock that everything reads time from.

Every component takes a :class:`Clock` so that tests and the demo can drive time
(DST days, clock jumps, accelerated hours, boots without a clock) without sleeping.
All wall times are UTC seconds since the Unix epoch (float); all durations are seconds.

Besides wall time a clock tells the kernel's boot id and ``CLOCK_BOOTTIME`` (seconds since
that boot, counting suspend), and whether the wall clock has been synchronised: a Raspberry
Pi has no battery clock and boots with the time fake-hwclock saved at its last shutdown, so
until NTP answers its wall time may be hours or days behind, while boot time is right.
"""

from __future__ import annotations

import ctypes
import threading
import time
import uuid
from pathlib import Path
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

    def boottime(self) -> float:
        """Seconds since this boot (``CLOCK_BOOTTIME``): right even when wall time is not."""

    def boot_id(self) -> str:
        """The kernel's id of this boot (a new one after every reboot)."""

    def synchronized(self) -> bool:
        """True when the wall clock is known to be set (NTP has answered)."""


#: systemd-timesyncd creates this file once it has synchronised the clock (since boot).
TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"
_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_TIME_ERROR = 5  #: adjtimex's answer when the kernel says the clock is not synchronised
_STA_UNSYNC = 0x0040  #: adjtimex status bit: the clock is not synchronised


def kernel_clock_synchronized() -> bool:
    """True when the system clock is synchronised: systemd-timesyncd's flag file, else the
    kernel's NTP state (``adjtimex`` neither TIME_ERROR nor STA_UNSYNC, as chrony or ntpd
    leave it once they have set the clock)."""
    if Path(TIMESYNC_FLAG).exists():
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()  # modes = 0: read only
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return False
    return state not in (-1, _TIME_ERROR) and not timex.status & _STA_UNSYNC


class _Timex(ctypes.Structure):
    """The head of the kernel's ``struct timex`` (adjtimex(2)), padded to its full size."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("_rest", ctypes.c_char * 256)]


def read_boot_id() -> str:
    """The kernel's boot id, or a per-process stand-in where /proc does not tell it."""
    global _boot_id
    if _boot_id is None:
        try:
            _boot_id = Path(_BOOT_ID_FILE).read_text().strip() or None
        except OSError:
            _boot_id = None
        _boot_id = _boot_id or f"process-{uuid.uuid4()}"
    return _boot_id


_boot_id: str | None = None


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

    def boottime(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def boot_id(self) -> str:
        return read_boot_id()

    def synchronized(self) -> bool:
        return kernel_clock_synchronized()


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

    def boottime(self) -> float:
        return self.monotonic()

    def boot_id(self) -> str:
        return read_boot_id()

    def synchronized(self) -> bool:
        return True  # simulated time is the truth of the simulation


class ManualClock:
    """A clock that moves only when told to (tests).

    ``sleep``/``wait`` block in real time until :meth:`advance` (from another
    thread) has moved the clock past their deadline, or the event is set.
    :meth:`jump` moves wall time without moving the monotonic clock, which is
    what an NTP step or a fake-hwclock restore looks like.
    """

    def __init__(self, start: float = 1_790_000_000.0, *, speed: float = 1.0,
                 synchronized: bool = True, boot_id: str = "manual-boot-1") -> None:
        self.speed = speed
        self._wall = float(start)
        self._mono = 0.0
        self._boot = 100.0  # boot time at the start (the machine booted before we started)
        self._boot_id = boot_id
        #: What :meth:`synchronized` answers; tests set it, or call :meth:`sync`.
        self.is_synchronized = synchronized
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

    def sync(self, step: float) -> None:
        """NTP answers: wall time steps by ``step`` seconds and is synchronised from now on."""
        with self._cond:
            self._wall += step
            self.is_synchronized = True
            self._cond.notify_all()

    def reboot(self, boot_id: str, *, down_s: float = 60.0, wall: float | None = None,
               synchronized: bool = False) -> None:
        """A new boot: ``down_s`` seconds pass, boot time restarts near 0 and the wall clock
        restarts at ``wall`` (fake-hwclock's saved time; default: where it was)."""
        with self._cond:
            self._mono += down_s
            self._boot = 5.0 - self._mono  # boot time 5 s when we come back
            self._wall = self._wall if wall is None else float(wall)
            self._boot_id = boot_id
            self.is_synchronized = synchronized
            self._cond.notify_all()

    def boottime(self) -> float:
        with self._cond:
            return self._mono + self._boot

    def boot_id(self) -> str:
        return self._boot_id

    def synchronized(self) -> bool:
        return self.is_synchronized

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
