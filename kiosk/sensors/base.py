"""The small interface every sensor kind implements."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from types import TracebackType

from kiosk.clock import Clock
from kiosk.events import Emit, Message, SensorEvent, SensorState


class Sensor(ABC):
    """Base class of all sensors.

    A sensor turns hardware signals into :mod:`kiosk.events` messages and hands
    them to ``emit`` (usually ``queue.put``).  It never touches SQLite or the
    network.  Subclasses implement :meth:`start` and :meth:`_close` (called once by the
    idempotent :meth:`close`; a sensor is also a context manager), and may
    override :meth:`tick`, which the daemon calls about every 0.5 s of clock time
    from its main loop (for time-based checks such as a stuck beam).
    """

    kind = "abstract"

    def __init__(self, id: str, *, emit: Emit, clock: Clock) -> None:
        self.id = id
        self._emit_fn = emit
        self.clock = clock
        self._state: str = SensorState.STARTING
        self._state_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._close_called = False

    @property
    def state(self) -> str:
        """Current state: one of ``starting``, ``ok``, ``down``, ``stuck``, ``simulated``."""
        return self._state

    def emit(self, message: Message) -> None:
        self._emit_fn(message)

    def set_state(self, state: str, message: str, *, level: str = "INFO", kind: str = "state") -> None:
        """Change state and emit a :class:`SensorEvent` if it actually changed."""
        with self._state_lock:
            if state == self._state:
                return
            self._state = state
        self.emit(SensorEvent(self.id, self.clock.now(), kind, message, level, state))

    @abstractmethod
    def start(self) -> None:
        """Open the hardware and begin emitting messages."""

    def tick(self, now: float) -> None:
        """Time-based checks; ``now`` is clock wall time in UTC seconds (default: none)."""
        return None

    @abstractmethod
    def _close(self) -> None:
        """Release the hardware (called once, by :meth:`close`)."""

    def close(self) -> None:
        """Stop and release the sensor; safe to call more than once."""
        with self._close_lock:
            if self._close_called:
                return
            self._close_called = True
        self._close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._close_called

    def __enter__(self) -> Sensor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} state={self._state!r}>"
