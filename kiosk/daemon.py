"""The counting daemon: sensors -> queue -> writer -> SQLite, in one main loop.

Signals only set a flag and wake the loop (nobodd style).  The main thread owns
the database; sensor callbacks and reader threads only timestamp and enqueue.

Durability: SIGTERM or Ctrl-C drains the queue and flushes, so nothing is lost;
``kill -9`` or a power cut loses at most the last ``flush_interval_s``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from collections.abc import Callable
from typing import Any, ClassVar

from kiosk import __version__, systemd
from kiosk.clock import Clock
from kiosk.config import Config
from kiosk.config import load as load_config
from kiosk.events import SensorEvent
from kiosk.exc import ConfigError, SensorError, StorageError
from kiosk.sensors import build_sensors
from kiosk.sensors.base import Sensor
from kiosk.store import Store
from kiosk.writer import Writer

log = logging.getLogger("kiosk.daemon")

#: Builds a service (an object with ``start()`` and ``stop()``) for a daemon that is starting.
ServiceFactory = Callable[["Daemon"], Any]

TICK_S = 0.5  #: Real seconds between sensor ticks and housekeeping checks.
HEARTBEAT_S = 30.0  #: Real seconds between writes that prove the daemon is running.
JUMP_TOLERANCE_S = 5.0  #: A wall-clock step larger than this (clock seconds) is a jump.
PRUNE_EVERY_S = 3600.0  #: Real seconds between retention sweeps.
DRAIN_MAX = 200_000  #: Messages taken from the queue before housekeeping gets a turn.

_WAKE = object()


class Daemon:
    """Runs the counter until SIGTERM/SIGINT.

    :param config: the validated configuration.
    :param clock: the clock all timestamps come from.
    :param config_path: file to re-read on SIGHUP (None: reload not possible).
    :param pin_factory: gpiozero pin factory for GPIO sensors (None: gpiozero's default).
    :param upload_factory: builds the upload service when the config has ``[upload]``; it is
        rebuilt on a reload that changes ``[upload]``.
    :param services: further :data:`ServiceFactory` callables, started after the sensors and
        the upload service (the demo's progress lines hook in here).
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        config_path: str | None = None,
        pin_factory: Any = None,
        upload_factory: ServiceFactory | None = None,
        services: list[ServiceFactory] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.config_path = config_path
        self.pin_factory = pin_factory
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.sensors: list[Sensor] = []
        self.store: Store | None = None
        self.writer: Writer | None = None
        self._upload_factory = upload_factory
        self._upload: Any = None
        self._service_factories = services or []
        self._services: list[Any] = []
        self._stop_signal: int | None = None
        self._reload = False
        self.started_at = 0.0

    # -- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop_signal = signum
        self.queue.put(_WAKE)  # SimpleQueue.put is safe in a signal handler

    def request_stop(self) -> None:
        """Ask the loop to stop (from another thread or a test)."""
        self._stop_signal = signal.SIGTERM
        self.queue.put(_WAKE)

    # -- life cycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """Count until asked to stop; returns the process exit status."""
        cfg = self.config
        self.store = store = Store.open(cfg.storage.path)
        self.writer = writer = Writer(store, clock=self.clock, sensor_kinds=self._kinds())
        writer.load_sensor_history()
        starts = int(store.meta("starts", 0)) + 1
        now = self.clock.now()
        self.started_at = now
        writer.run_id = store.start_run(now=now, pid=os.getpid(), version=__version__)
        writer.journal(
            "INFO", "daemon-start",
            f"kiosk {__version__} started (pid {os.getpid()}, {len(cfg.sensors)} sensor(s), "
            f"config {cfg.source}, database {cfg.storage.path}, start #{starts})",
        )
        old = {sig: signal.signal(sig, self._on_signal)
               for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self._start_sensors()
            writer.flush(meta={"starts": starts, **self._meta()})
            self._start_upload()
            for factory in self._service_factories:
                service = factory(self)
                service.start()
                self._services.append(service)
            systemd.ready(f"counting on {len(self.sensors)} sensor(s)")
            self._loop()
        finally:
            systemd.stopping()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self._shutdown()
        return 0

    @property
    def run_id(self) -> int | None:
        """The id of the live run record (``runs`` table) while counting, else None."""
        return self.writer.run_id if self.writer is not None else None

    def _start_upload(self) -> None:
        if self._upload_factory is not None and self.config.upload is not None:
            self._upload = self._upload_factory(self)
            self._upload.start()

    def _stop_upload(self) -> None:
        if self._upload is not None:
            try:
                self._upload.stop()
            except Exception as e:
                log.error("error while stopping the upload service: %s", e)
            self._upload = None

    def _kinds(self) -> dict[str, str]:
        return {s.id: s.type for s in self.config.sensors}

    def _start_sensors(self) -> None:
        self.sensors = build_sensors(self.config, emit=self.queue.put, clock=self.clock,
                                     pin_factory=self.pin_factory)
        started = 0
        for sensor in self.sensors:
            try:
                sensor.start()
                started += 1
            except SensorError as e:
                self.writer.handle(SensorEvent(sensor.id, self.clock.now(), "state",
                                               f"cannot start: {e}", "ERROR", "down"))
        if self.sensors and not started:
            self.writer.flush()
            raise SensorError("no sensor could be started; see the messages above")

    def _stop_sensors(self) -> None:
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception as e:  # a broken sensor must not stop the final flush
                log.error("%s: error while closing: %s", sensor.id, e)

    def _meta(self) -> dict[str, Any]:
        w = self.writer
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": __version__,
                "started_at": self.started_at,
                "run_id": w.run_id,
                "flush_interval_s": self.config.storage.flush_interval_s,
                "heartbeat_s": HEARTBEAT_S,
                "queue_depth": self.queue.qsize(),
                "flushes": w.stats.flushes,
                "last_error": w.stats.last_error,
                "speed": self.clock.speed,
            }
        }

    def _loop(self) -> None:
        writer = self.writer
        speed = self.clock.speed
        flush_every = self.config.storage.flush_interval_s  # real seconds
        watchdog = systemd.watchdog_period()
        now_real = time.monotonic()
        last_flush = last_tick = last_ping = last_prune = last_beat = now_real
        beat_every = HEARTBEAT_S / min(speed, 60)  # an accelerated demo beats more often
        last_prune -= PRUNE_EVERY_S - 60  # first sweep a minute after start
        last_wall, last_mono = self.clock.now(), self.clock.monotonic()
        q = self.queue
        while self._stop_signal is None:
            if writer.pending:  # wake when the next flush is due
                wait = min(TICK_S, last_flush + flush_every - time.monotonic())
            else:  # nothing to write: sleep until a message or the next tick
                wait = TICK_S - (time.monotonic() - last_tick)
            try:
                msg = q.get(timeout=max(0.001, wait))
                for _ in range(DRAIN_MAX):
                    if msg is not _WAKE:
                        writer.handle(msg)
                    msg = q.get_nowait()
                else:
                    if msg is not _WAKE:  # the cap was reached: keep the one in hand
                        writer.handle(msg)
            except queue.Empty:
                pass
            if self._reload:
                self._reload = False
                self._do_reload()
            now_real = time.monotonic()
            if now_real - last_tick >= TICK_S:
                last_tick = now_real
                wall, mono = self.clock.now(), self.clock.monotonic()
                self._check_clock(last_wall + (mono - last_mono), wall)
                last_wall, last_mono = wall, mono
                for sensor in self.sensors:
                    sensor.tick(wall)
            if now_real - last_beat >= beat_every:  # proves we run; records last pulses
                writer.flush(meta=self._meta())
                last_flush = last_beat = now_real
            elif writer.pending and now_real - last_flush >= flush_every:
                writer.flush()
                last_flush = now_real
            if now_real - last_prune >= PRUNE_EVERY_S:
                last_prune = now_real
                self._prune()
            # The loop got round: the writer is alive (a failing disk keeps pinging, since a
            # restart would only lose the counts held in memory).
            if watchdog and now_real - last_ping >= watchdog / 2:
                systemd.watchdog_ping()
                last_ping = now_real

    def _check_clock(self, expected: float, wall: float) -> None:
        step = wall - expected
        if abs(step) <= JUMP_TOLERANCE_S * max(1.0, self.clock.speed):
            return
        w = self.writer
        w.journal("WARNING", "clock-jump",
                  f"the wall clock stepped by {step:+.0f} s (NTP sync or manual change); "
                  f"the running record is split so the gap is not counted as running")
        try:
            self.store.end_run(w.run_id, now=expected, reason="clock-jump")
            w.run_id = self.store.start_run(now=wall, pid=os.getpid(), version=__version__)
        except StorageError as e:  # counting goes on; the run record is only less exact
            log.error("could not split the running record after the clock jump: %s", e)
        w.flush(meta=self._meta())

    def _prune(self) -> None:
        s = self.config.storage
        try:
            n = self.store.prune(now=self.clock.now(), event_retention_days=s.event_retention_days,
                                 journal_retention_days=s.journal_retention_days)
            if n:
                log.info("removed %d raw events/journal lines past retention", n)
        except Exception as e:
            log.warning("retention sweep failed (will try again in an hour): %s", e)

    def _do_reload(self) -> None:
        w = self.writer
        if not self.config_path:
            w.journal("WARNING", "config-reload", "SIGHUP ignored: no config file to re-read")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            w.journal("ERROR", "config-reload",
                      f"config reload failed, keeping the running config: {e}")
            return
        if new.storage.path != self.config.storage.path:
            w.journal("ERROR", "config-reload",
                      "config reload refused: [storage] path changed; restart the service")
            return
        self._stop_sensors()
        self._drain()
        self.config = new
        w.set_sensors(self._kinds())
        self._start_sensors()
        w.journal("INFO", "config-reload", f"config reloaded from {self.config_path}")
        w.flush(meta=self._meta())

    def _drain(self) -> None:
        while True:
            try:
                msg = self.queue.get_nowait()
            except queue.Empty:
                return
            if msg is not _WAKE:
                self.writer.handle(msg)

    def _shutdown(self) -> None:
        for service in reversed(self._services):
            try:
                service.stop()
            except Exception as e:
                log.error("error while stopping %r: %s", service, e)
        self._stop_upload()
        self._stop_sensors()
        w, store = self.writer, self.store
        if w is None or store is None:
            return
        self._drain()
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "error"
        w.journal("INFO", "daemon-stop", f"stopping on {name}; writing the last counts")
        for attempt in range(5):
            if w.flush(meta=self._meta()):
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            log.critical("could not write the last counts before stopping: %s", w.stats.last_error)
        try:
            store.end_run(w.run_id, now=self.clock.now(), reason=name)
        except Exception as e:
            log.error("could not record the stop time: %s", e)
        store.close()


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr; under systemd with syslog level prefixes journald understands."""
    root = logging.getLogger()
    if any(getattr(h, "_kiosk", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler()
    handler._kiosk = True  # type: ignore[attr-defined]
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


class _JournalFormatter(logging.Formatter):
    _PRIO: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self._PRIO.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())
