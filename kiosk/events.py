"""What sensors put on the queue.  Sensor callbacks and reader threads only build
one of these (a timestamp and a few fields) and enqueue it; the writer does the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

Direction = Literal["in", "out"]


class SensorState(StrEnum):
    """Sensor states shown in ``kiosk status`` and sent in upload health (stored as text)."""

    STARTING = "starting"
    OK = "ok"
    DOWN = "down"
    STUCK = "stuck"
    SIMULATED = "simulated"


#: The state names, in order (kept for callers of the old tuple).
SENSOR_STATES = tuple(SensorState)


@dataclass(frozen=True, slots=True)
class Pulse:
    """``count`` visitors crossed ``sensor_id`` in ``direction`` at UTC second ``ts``.

    ``boottime`` is the same moment on the kernel's ``CLOCK_BOOTTIME`` (seconds since this
    boot), which stays right while the wall clock is not yet set; ``None`` lets the writer
    derive it from ``ts`` when it takes the pulse (a few milliseconds later).
    """

    sensor_id: str
    ts: float
    direction: Direction
    count: int = 1
    boottime: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A visitor pressed the ``level`` button of feedback terminal ``sensor_id`` at UTC second
    ``ts`` (the start of the press).

    ``rank`` is the level's place on the terminal's scale of ``scale`` levels, 0 the best
    (so the answer's score is ``100 * (scale - 1 - rank) / (scale - 1)``).  ``repeated``: the
    press came less than ``lockout_s`` after the terminal's previous press; it is kept but
    left out of every score.  ``boottime`` as for :class:`Pulse`.
    """

    sensor_id: str
    ts: float
    level: str
    rank: int
    scale: int
    repeated: bool = False
    boottime: float | None = None


@dataclass(frozen=True, slots=True)
class SensorEvent:
    """A change of sensor state or a notable happening (fault, reconnect, device reset).

    ``state`` is the sensor's new state (a :class:`SensorState`) or ``None``
    when the event does not change it.  ``level`` is a logging level name.
    """

    sensor_id: str
    ts: float
    kind: str  # e.g. "state", "reconnect", "device-reset", "transit-timeout"
    message: str
    level: str = "INFO"
    state: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A serial line that did not parse (``sample``: a printable excerpt of its first 80 bytes)."""

    sensor_id: str
    ts: float
    sample: str
    reason: str


class ChannelState(NamedTuple):
    """What a cumulative counter's channel (in or out) decoder keeps between readings."""

    last: int | None  #: the last running total taken (None: no reading yet)
    suspect: int | None = None  #: a reading held until the next one decides, or None
    suspect_offline: bool = False  #: an offline gap lies between ``last`` and ``suspect``


@dataclass(frozen=True, slots=True)
class TotalsState:
    """A cumulative serial sensor's decoder state after a reading, emitted after the pulses
    of that reading.  The writer stores the latest in the same transaction as those counts,
    so a restart resumes from it: neither counting twice nor losing (``ts``: UTC s)."""

    sensor_id: str
    ts: float
    port: str  #: the port the totals were read from (a different device does not resume)
    totals_in: ChannelState
    totals_out: ChannelState


Message = Pulse | Answer | SensorEvent | Rejected | TotalsState
Emit = Callable[[Message], None]


def printable_sample(data: bytes, limit: int = 80) -> str:
    """A safe, printable excerpt of raw bytes for logs (non-printables escaped)."""
    text = data[:limit].decode("ascii", errors="backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text + ("…" if len(data) > limit else "")
