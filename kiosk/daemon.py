"""The counting daemon: sensors -> queue -> writer -> SQLite, in one main loop.

Signals only set a flag and wake the loop (nobodd style).  The main thread owns
the database; sensor callbacks and reader threads only timestamp and enqueue.

Durability: SIGTERM or Ctrl-C drains the queue and flushes everything, so nothing is
lost; ``kill -9`` or a power cut loses at most the counts of the last ``flush_interval_s``.

What is written when (the SD card's sake; the README's durability promise):

* counts, journal lines and sensor state changes: one commit ``flush_interval_s`` after
  the first of them arrived (so a pulse waits at most that long, and the pulses of a
  busy stretch share a commit);
* raw events: with the first of those commits once :data:`EVENTS_EVERY_S` have passed
  since they were last written (or :data:`EVENTS_MAX_PENDING` wait), else with the
  heartbeat;
* the heartbeat (raw events, last-pulse times, the running record's ``last_seen`` and
  the ``meta`` row ``daemon``, with everything else pending): :data:`BEAT_AFTER_S` after
  each multiple of :data:`HEARTBEAT_S` of the wall clock, which includes every 15-minute
  bucket boundary (uploads wait for ``last_seen`` to pass a period's end).

Timers read the injected clock (``clock.monotonic()``), so a :class:`~kiosk.clock.ManualClock`
drives the loop in tests.  ``flush_interval_s``, :data:`TICK_S`, :data:`EVENTS_EVERY_S` and
:data:`PRUNE_EVERY_S` are *real* seconds: the loop waits ``interval * clock.speed`` clock
seconds, so an accelerated demo does not commit ``speed`` times as often.  Heartbeats
follow the clock's wall time, at most one per :data:`TICK_S` real seconds.  The systemd
watchdog ping is a real-time deadline and stays on :func:`time.monotonic`.
"""

from __future__ import annotations

import logging
import math
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
from kiosk.sensors import build_sensor, build_sensors
from kiosk.sensors.base import Sensor
from kiosk.store import Store
from kiosk.writer import Writer

log = logging.getLogger("kiosk.daemon")

#: Builds a service (an object with ``start()`` and ``stop()``) for a daemon that is starting.
ServiceFactory = Callable[["Daemon"], Any]

TICK_S = 0.5  #: Real seconds between sensor ticks and housekeeping checks.
#: Clock seconds between writes that prove the daemon is running (``runs.last_seen``) and
#: carry the last-pulse times; they fall just after multiples of this of the wall clock,
#: and 900 (a bucket) is a multiple of it.
HEARTBEAT_S = 180.0
#: Clock seconds past the multiple that the heartbeat comes, so that ``last_seen`` is past a
#: period's end when the uploader (``grace_s`` later) looks, even on a slewed clock.
BEAT_AFTER_S = 1.0
EVENTS_EVERY_S = 60.0  #: Real seconds raw events may wait in memory for a counts commit.
EVENTS_MAX_PENDING = 10_000  #: Raw events in memory that go out with the next commit anyway.
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
        self._sensor_configs: dict[str, Any] = {}
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

    def wake(self) -> None:
        """Make the loop go round at once (e.g. a test's clock moved while it waits)."""
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

    def _w(self) -> Writer:
        """The writer (only while :meth:`run` runs)."""
        assert self.writer is not None, "the daemon is not running"
        return self.writer

    def _st(self) -> Store:
        """The store (only while :meth:`run` runs)."""
        assert self.store is not None, "the daemon is not running"
        return self.store

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
        self._sensor_configs = {sc.id: sc for sc in self.config.sensors}
        started = sum(self._start_one(sensor) for sensor in self.sensors)
        if self.sensors and not started:
            self._w().flush()
            raise SensorError("no sensor could be started; see the messages above")

    def _start_one(self, sensor: Sensor) -> bool:
        try:
            sensor.start()
            return True
        except SensorError as e:
            self._w().handle(SensorEvent(sensor.id, self.clock.now(), "state",
                                         f"cannot start: {e}", "ERROR", "down"))
            return False

    def _stop_sensors(self, sensors: list[Sensor] | None = None) -> None:
        for sensor in self.sensors if sensors is None else sensors:
            try:
                sensor.close()
            except Exception as e:  # a broken sensor must not stop the final flush
                log.error("%s: error while closing: %s", sensor.id, e)

    def _meta(self) -> dict[str, Any]:
        w = self._w()
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
        writer = self._w()
        clock = self.clock
        speed = clock.speed
        # Intervals in clock seconds; the configured ones are real seconds (see module doc).
        flush_every = self.config.storage.flush_interval_s * speed
        tick_every = TICK_S * speed
        events_every = EVENTS_EVERY_S * speed
        prune_every = PRUNE_EVERY_S * speed
        watchdog = systemd.watchdog_period()  # real seconds
        now = clock.monotonic()
        last_tick = last_prune = last_events = now
        next_beat = now + _until_beat(clock.now(), tick_every)
        pending_since: float | None = None  # when urgent data began to wait
        last_prune -= prune_every - 60 * speed  # first sweep a (real) minute after start
        last_ping = time.monotonic()
        last_wall, last_mono = clock.now(), now
        q = self.queue
        while self._stop_signal is None:
            # wake for the next tick, heartbeat or flush, or a message
            due = min(last_tick + tick_every, next_beat)
            if pending_since is not None:
                due = min(due, pending_since + flush_every)
            timeout = clock.real_timeout(due - now)
            if watchdog:
                timeout = min(timeout, watchdog / 2 - (time.monotonic() - last_ping))
            try:
                msg = q.get(timeout=max(0.001, timeout))
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
            now = clock.monotonic()
            if pending_since is None and writer.pending:
                pending_since = now
            if now - last_tick >= tick_every:
                last_tick = now
                wall, mono = clock.now(), now
                self._check_clock(last_wall + (mono - last_mono), wall)
                last_wall, last_mono = wall, mono
                for sensor in self.sensors:
                    sensor.tick(wall)
            if now >= next_beat:  # proves we run; writes everything held in memory
                writer.flush(meta=self._meta())
                next_beat = now + _until_beat(clock.now(), tick_every)
                last_events = now
                pending_since = now if writer.pending else None  # a failed write retries
            elif pending_since is not None and now - pending_since >= flush_every:
                events = (now - last_events >= events_every
                          or writer.events_pending >= EVENTS_MAX_PENDING)
                if writer.flush(events=events) and events:
                    last_events = now
                pending_since = now if writer.pending else None  # a failed write retries
            if now - last_prune >= prune_every:
                last_prune = now
                self._prune()
            # The loop got round: the writer is alive (a failing disk keeps pinging, since a
            # restart would only lose the counts held in memory).
            real = time.monotonic()
            if watchdog and real - last_ping >= watchdog / 2:
                systemd.watchdog_ping()
                last_ping = real

    def _check_clock(self, expected: float, wall: float) -> None:
        step = wall - expected
        if abs(step) <= JUMP_TOLERANCE_S * max(1.0, self.clock.speed):
            return
        w = self._w()
        store = self._st()
        w.journal("WARNING", "clock-jump",
                  f"the wall clock stepped by {step:+.0f} s (NTP sync or manual change); "
                  f"the running record is split so the gap is not counted as running")
        try:
            if w.run_id is not None:
                store.end_run(w.run_id, now=expected, reason="clock-jump")
            w.run_id = store.start_run(now=wall, pid=os.getpid(), version=__version__)
        except StorageError as e:  # counting goes on; the run record is only less exact
            log.error("could not split the running record after the clock jump: %s", e)
        w.flush(meta=self._meta())

    def _prune(self) -> None:
        s = self.config.storage
        try:
            n = self._st().prune(now=self.clock.now(), event_retention_days=s.event_retention_days,
                                 journal_retention_days=s.journal_retention_days)
            if n:
                log.info("removed %d raw events/journal lines past retention", n)
        except Exception as e:
            log.warning("retention sweep failed (will try again in an hour): %s", e)

    def _do_reload(self) -> None:
        """Re-read the config; rebuild only the sensors and services whose config changed.

        A sensor whose :class:`~kiosk.config.SensorConfig` (type and options) is unchanged
        keeps running, so it drops no pulse; a changed one is closed and rebuilt; removed
        ones are closed and new ones started.  The upload service is rebuilt only when
        ``[upload]`` changed.
        """
        w = self._w()
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
        old_cfg = self.config
        tz_changed = new.device.timezone != old_cfg.device.timezone
        keep: dict[str, Sensor] = {}
        for sensor in self.sensors:
            sc = self._sensor_configs.get(sensor.id)
            if not tz_changed and sc is not None and sc in new.sensors:
                keep[sensor.id] = sensor
        gone = [s for s in self.sensors if s.id not in keep]
        self._stop_sensors(gone)
        self._drain()
        self.config = new
        w.set_sensors(self._kinds())
        sensors: list[Sensor] = []
        restarted: list[str] = []
        added: list[str] = []
        old_ids = {s.id for s in gone}
        for sc in new.sensors:
            if sc.id in keep:
                sensors.append(keep[sc.id])
                continue
            sensor = build_sensor(sc, emit=self.queue.put, clock=self.clock,
                                  timezone=new.device.timezone, pin_factory=self.pin_factory)
            self._start_one(sensor)
            sensors.append(sensor)
            (restarted if sc.id in old_ids else added).append(sc.id)
        removed = sorted(old_ids - {sc.id for sc in new.sensors})
        self.sensors = sensors
        self._sensor_configs = {sc.id: sc for sc in new.sensors}
        changes = [f"restarted {', '.join(restarted)}"] if restarted else []
        changes += [f"started {', '.join(added)}"] if added else []
        changes += [f"closed {', '.join(removed)}"] if removed else []
        if new.upload != old_cfg.upload:
            self._stop_upload()
            self._start_upload()
            changes.append("uploads rebuilt")
        w.journal("INFO", "config-reload",
                  f"config reloaded from {self.config_path}: "
                  f"{'; '.join(changes) if changes else 'nothing to rebuild'}")
        w.flush(meta=self._meta())

    def _drain(self) -> None:
        while True:
            try:
                msg = self.queue.get_nowait()
            except queue.Empty:
                return
            if msg is not _WAKE:
                self._w().handle(msg)

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
            if w.run_id is not None:
                store.end_run(w.run_id, now=self.clock.now(), reason=name)
        except Exception as e:
            log.error("could not record the stop time: %s", e)
        store.close()


def _until_beat(wall: float, at_least: float) -> float:
    """Clock seconds from ``wall`` to the next heartbeat at least ``at_least`` away: at
    :data:`BEAT_AFTER_S` past a multiple of :data:`HEARTBEAT_S` of the wall clock."""
    k = math.ceil((wall + at_least - BEAT_AFTER_S) / HEARTBEAT_S)
    return k * HEARTBEAT_S + BEAT_AFTER_S - wall


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
