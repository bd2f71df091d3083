"""The small interface every sensor kind implements."""

from __future__ import annotations

import threading

from kiosk.clock import Clock
from kiosk.events import Emit, Message, SensorEvent


class Sensor:
    """Base class of all sensors.

    A sensor turns hardware signals into :mod:`kiosk.events` messages and hands
    them to ``emit`` (usually ``queue.put``).  It never touches SQLite or the
    network.  Subclasses implement :meth:`start` and :meth:`close`, and may
    override :meth:`tick`, which the daemon calls about every 0.5 s of clock time
    from its main loop (for time-based checks such as a stuck beam).
    """

    kind = "abstract"

    def __init__(self, id: str, *, emit: Emit, clock: Clock) -> None:
        self.id = id
        self._emit_fn = emit
        self.clock = clock
        self._state = "starting"
        self._state_lock = threading.Lock()

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

    def start(self) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Time-based checks; ``now`` is clock wall time in UTC seconds."""

    def close(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id!r} state={self._state!r}>"
