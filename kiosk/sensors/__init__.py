"""Building sensor objects from their configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiosk.clock import Clock
from kiosk.config import Config, SensorConfig
from kiosk.events import Emit, TotalsState
from kiosk.sensors.base import Sensor


def reads_totals(sc: SensorConfig) -> bool:
    """True for a serial sensor in ``mode = "cumulative"`` (it keeps running totals)."""
    return sc.type == "serial" and sc.options.get("mode") == "cumulative"


def build_sensor(
    sc: SensorConfig, *, emit: Emit, clock: Clock, timezone: str, pin_factory: Any = None,
    resume: TotalsState | None = None,
) -> Sensor:
    """The sensor object for one ``[[sensors]]`` table (nothing is opened until ``start``).

    ``sc.options`` were checked by :mod:`kiosk.config` against ``SENSOR_KEYS``, the same
    schema the constructors take their defaults and checks from, so a config that
    ``kiosk check-config`` accepts builds here.  ``resume``: the running totals a cumulative
    serial sensor stored last (ignored by the other kinds).
    """
    opts = dict(sc.options)
    if sc.type == "gpio":
        from kiosk.sensors.gpio import GPIOSensor

        return GPIOSensor(sc.id, emit=emit, clock=clock, pin_factory=pin_factory, **opts)
    if sc.type == "gpio-pair":
        from kiosk.sensors.gpio import GPIOPairSensor

        return GPIOPairSensor(sc.id, emit=emit, clock=clock, pin_factory=pin_factory, **opts)
    if sc.type == "serial":
        from kiosk.sensors.serial import SerialSensor

        if reads_totals(sc):
            opts["resume"] = resume
        return SerialSensor(sc.id, emit=emit, clock=clock, **opts)
    if sc.type == "simulated":
        from kiosk.sensors.simulated import SimulatedSensor

        return SimulatedSensor(sc.id, emit=emit, clock=clock, timezone=timezone, **opts)
    if sc.type == "feedback":
        from kiosk.sensors.feedback import FeedbackSensor

        return FeedbackSensor(sc.id, emit=emit, clock=clock, pin_factory=pin_factory, **opts)
    if sc.type == "feedback-simulated":
        from kiosk.sensors.feedback_simulated import SimulatedFeedbackSensor

        return SimulatedFeedbackSensor(sc.id, emit=emit, clock=clock, timezone=timezone, **opts)
    raise ValueError(f"unknown sensor type {sc.type!r}")


def build_sensors(
    cfg: Config, *, emit: Emit, clock: Clock, pin_factory: Any = None,
    resume: Mapping[str, TotalsState] | None = None,
) -> list[Sensor]:
    """Every configured sensor, in config order (``resume``: stored totals by sensor id)."""
    resume = resume or {}
    return [
        build_sensor(sc, emit=emit, clock=clock, timezone=cfg.device.timezone,
                     pin_factory=pin_factory, resume=resume.get(sc.id))
        for sc in cfg.sensors
    ]
