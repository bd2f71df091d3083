"""A simulated feedback terminal: visitors' answers for demos and tests.

The answers arrive like the visits of :class:`~kiosk.sensors.simulated.SimulatedSensor`
(the same daily profile over the opening hours, a non-homogeneous Poisson process in local
time), at ``answers_per_day`` on weekdays and ``weekend_answers_per_day`` on weekend days.
Each arrival is one answer, its level drawn with the configured ``shares``; with probability
``repeat_share`` it is followed, one second later, by a repeated press of the same button
(kept, left out of scores).  The inner simulator's thread, clock following and clock-jump
handling are used as they are; its "out" pulses (leaving) are dropped.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from kiosk.clock import Clock
from kiosk.config import SENSOR_KEYS, check_values
from kiosk.events import Answer, Emit, Message, Pulse, SensorEvent
from kiosk.exc import ConfigError
from kiosk.sensors.base import Sensor
from kiosk.sensors.simulated import SimulatedSensor

_KEYS = SENSOR_KEYS["feedback-simulated"]
#: Seconds between an answer and the repeated press that may follow it.
REPEAT_AFTER_S = 1.0


class SimulatedFeedbackSensor(Sensor):
    """Answers at a configured rate and level mix (see the module docstring).

    :param answers_per_day: expected answers on a Monday–Friday.
    :param weekend_answers_per_day: expected answers on a Saturday or Sunday.
    :param shares: level name -> share (best first; normalised by the config).
    :param repeat_share: probability that an answer is followed by a repeated press.
    :param weekday_hours: / :param weekend_hours: local opening hours ``"HH:MM-HH:MM"``.
    :param seed: seed (``None``: unpredictable); the same seed gives the same answers.
    :param timezone: IANA zone of the opening hours.
    :param tick_s: clock seconds between the thread's wake-ups.
    """

    kind = "feedback-simulated"

    def __init__(self, id: str, *, emit: Emit, clock: Clock, timezone: str = "Europe/Helsinki",
                 tick_s: float = 1.0, **options: Any) -> None:
        opts, problems = check_values(_KEYS, options)
        if problems:
            raise ConfigError([f"sensor {id!r} (feedback-simulated): {p.key}: {p.text}"
                               for p in problems])
        super().__init__(id, emit=emit, clock=clock)
        self.options = opts
        self.levels = tuple(opts["shares"])
        self._weights = [opts["shares"][name] for name in self.levels]
        self.repeat_share: float = opts["repeat_share"]
        self._rng = random.Random(opts["seed"])
        self.answers = [0] * len(self.levels)
        self.repeated = [0] * len(self.levels)
        self._inner = SimulatedSensor(
            id, emit=self._from_inner, clock=clock, timezone=timezone,
            weekday_visits=opts["answers_per_day"],
            weekend_visits=opts["weekend_answers_per_day"],
            weekday_hours=opts["weekday_hours"], weekend_hours=opts["weekend_hours"],
            seed=None if opts["seed"] is None else opts["seed"] + 1, tick_s=tick_s)

    def _from_inner(self, msg: Message) -> None:
        """An arrival of the inner simulator becomes an answer; its state events pass."""
        if isinstance(msg, Pulse):
            if msg.direction != "in":
                return
            rank = self._rng.choices(range(len(self.levels)), self._weights)[0]
            self.answers[rank] += 1
            self.emit(Answer(self.id, msg.ts, self.levels[rank], rank, len(self.levels)))
            if self._rng.random() < self.repeat_share:
                self.repeated[rank] += 1
                self.emit(Answer(self.id, msg.ts + REPEAT_AFTER_S, self.levels[rank], rank,
                                 len(self.levels), True))
            return
        if isinstance(msg, SensorEvent) and msg.state == "simulated":
            o = self.options
            msg = replace(msg, message=f"simulated answers: {o['answers_per_day']:g} weekday / "
                                       f"{o['weekend_answers_per_day']:g} weekend answers per day "
                                       f"({', '.join(self.levels)})")
        self.emit(msg)

    @property
    def state(self) -> str:
        return self._inner.state

    def advance_to(self, t: float) -> int:
        """Emit every answer of arrivals in ``(last_t, t]`` (deterministic; see
        :meth:`SimulatedSensor.advance_to`); returns the arrivals taken."""
        return self._inner.advance_to(t)

    def expected_answers(self, start: float, end: float) -> float:
        """Expected answers (not repeated presses) with UTC timestamp in ``[start, end)``."""
        return self._inner.expected_arrivals(start, end)

    def start(self) -> None:
        """Start following the clock (a daemon thread); idempotent."""
        self._inner.start()

    def status(self) -> dict[str, Any]:
        """Levels and answers emitted per level since start."""
        return {"kind": self.kind, "state": self.state, "levels": list(self.levels),
                "answers": dict(zip(self.levels, self.answers, strict=True)),
                "repeated": dict(zip(self.levels, self.repeated, strict=True)),
                "counted": sum(self.answers), "running": self._inner.status()["running"]}

    def _close(self) -> None:
        self._inner.close()
