"""Assembling a daemon from a configuration: clock, logging, sensors, writer, uploads.

``kiosk run`` and ``kiosk demo`` both come through here, so the demo runs exactly the
daemon a kiosk runs.  Nothing here imports click: the CLI calls in, never the reverse.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from kiosk.clock import Clock, ScaledClock, SystemClock
from kiosk.config import Config
from kiosk.daemon import Daemon, ServiceFactory, setup_logging
from kiosk.exc import ConfigError

MAX_SPEED = 100_000.0  #: Fastest accelerated clock (simulated seconds per real second).


def with_db(cfg: Config, db_path: str) -> Config:
    """``cfg`` with ``[storage] path`` replaced by ``db_path``."""
    return replace(cfg, storage=replace(cfg.storage, path=db_path))


def upload_service(daemon: Daemon) -> Any:
    """The uploader thread of a daemon whose config has ``[upload]`` (a :data:`ServiceFactory`)."""
    from kiosk.store import Store
    from kiosk.upload import Uploader, UploadLock, UploadService

    cfg = daemon.config
    store = Store.open(cfg.storage.path)
    return UploadService(Uploader(store, cfg, clock=daemon.clock, live_run=lambda: daemon.run_id),
                         UploadLock(cfg.storage.path))


def clock_for(cfg: Config, speed: float, clock: Clock | None = None) -> Clock:
    """The system clock, or an accelerated one when ``speed`` is not 1 (simulated sensors only)."""
    if speed == 1.0:
        return clock or SystemClock()
    if not cfg.all_simulated:
        raise ConfigError(f"--speed {speed:g} is only allowed when every sensor is simulated; "
                          f"real sensors need the real clock")
    if not 0 < speed <= MAX_SPEED:
        raise ConfigError(f"--speed must be between 0 and {MAX_SPEED:g}, got {speed:g}")
    return clock or ScaledClock(speed=speed)


def build_daemon(cfg: Config, *, speed: float = 1.0, config_path: str | None = None,
                 clock: Clock | None = None, extra_services: list[ServiceFactory] | None = None,
                 pin_factory: Any = None) -> Daemon:
    """A daemon for ``cfg``: its clock, and the upload service when ``[upload]`` is set.

    ``extra_services`` are started after the upload service (the demo's progress lines).
    """
    return Daemon(cfg, clock=clock_for(cfg, speed, clock), config_path=config_path,
                  pin_factory=pin_factory, upload_factory=upload_service,
                  services=extra_services or [])


def run_daemon(cfg: Config, *, speed: float = 1.0, config_path: str | None = None,
               clock: Clock | None = None, extra_services: list[ServiceFactory] | None = None,
               debug: bool = False, quiet: bool = False) -> int:
    """Set up logging, build the daemon and run it; returns the exit status."""
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    setup_logging(level)
    daemon = build_daemon(cfg, speed=speed, config_path=config_path, clock=clock,
                          extra_services=extra_services)
    return daemon.run()
