"""Building sensor objects from their configuration."""

from __future__ import annotations

from typing import Any

from kiosk.clock import Clock
from kiosk.config import Config, SensorConfig
from kiosk.events import Emit
from kiosk.sensors.base import Sensor


def build_sensor(
    sc: SensorConfig, *, emit: Emit, clock: Clock, timezone: str, pin_factory: Any = None
) -> Sensor:
    """The sensor object for one ``[[sensors]]`` table (nothing is opened until ``start``).

    ``sc.options`` were checked by :mod:`kiosk.config` against ``SENSOR_KEYS``, the same
    schema the constructors take their defaults and checks from, so a config that
    ``kiosk check-config`` accepts builds here.
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

        return SerialSensor(sc.id, emit=emit, clock=clock, **opts)
    if sc.type == "simulated":
        from kiosk.sensors.simulated import SimulatedSensor

        return SimulatedSensor(sc.id, emit=emit, clock=clock, timezone=timezone, **opts)
    raise ValueError(f"unknown sensor type {sc.type!r}")


def build_sensors(
    cfg: Config, *, emit: Emit, clock: Clock, pin_factory: Any = None
) -> list[Sensor]:
    """Every configured sensor, in config order."""
    return [
        build_sensor(sc, emit=emit, clock=clock, timezone=cfg.device.timezone,
                     pin_factory=pin_factory)
        for sc in cfg.sensors
    ]
