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
from typing import Any, ClassVar, NamedTuple
from zoneinfo import ZoneInfo

from kiosk import __version__, systemd
from kiosk.clock import Clock
from kiosk.config import FEEDBACK_TYPES, Config
from kiosk.config import load as load_config
from kiosk.events import SensorEvent, SensorState
from kiosk.exc import ConfigError, SensorError, StorageError
from kiosk.feedback import silent_day
from kiosk.periods import duration_text, iso_utc
from kiosk.sensors import build_sensor, build_sensors, reads_totals
from kiosk.sensors.base import Sensor
from kiosk.store import Store, pid_alive
from kiosk.store.health import HealthFile, Pending
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
SENSOR_RETRY_MIN_S = 5.0  #: Clock seconds before a sensor that could not start is tried again.
SENSOR_RETRY_MAX_S = 300.0  #: Longest wait between two start attempts (doubling from the min).
#: Sensor states in which a sensor counts (a simulated sensor counts too).
WORKING_STATES = frozenset({SensorState.OK, SensorState.SIMULATED})
#: Exit status when the daemon stopped without writing every count it held (see the README).
EXIT_COUNTS_LOST = 1
CLOCK_CHECK_S = 2.0  #: Real seconds between two looks at whether NTP has set the clock.

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
        self.health: HealthFile | None = None
        self._status_sent = ""
        self._retry: dict[str, _Retry] = {}  # sensors that could not start, by id
        self._wal_id: tuple[int, int] | None = None

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
        self.health = health = HealthFile(cfg.storage.path)
        previous = health.read()
        self.writer = writer = Writer(store, clock=self.clock, sensor_kinds=self._kinds(),
                                      health=health)
        writer.load_sensor_history()
        writer.load_totals()
        starts = int(store.meta("starts", 0)) + 1
        now = self.clock.now()
        self.started_at = now
        writer.clock_trusted = trusted = self._clock_trusted()
        writer.run_id = self._start_run(now)
        writer.journal(
            "INFO", "daemon-start",
            f"kiosk {__version__} started (pid {os.getpid()}, {len(cfg.sensors)} sensor(s), "
            f"config {cfg.source}, database {cfg.storage.path}, start #{starts})",
        )
        self._journal_previous_loss(previous)
        self._wal_id = self._wal_identity()
        if trusted and store.needs_placement():
            self._place_unplaced()
        elif not trusted:
            writer.journal("WARNING", "clock",
                           "the wall clock is not set yet (no NTP answer since boot): pulses are "
                           "counted and kept with their boot time, and placed in their hours "
                           "when the clock is set ([device] clock = \"system\" trusts the clock "
                           "as it is)")
        old = {sig: signal.signal(sig, self._on_signal)
               for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self._start_sensors()
            self._drain()  # the sensors' first states, for the journal and READY's STATUS
            if writer.flush(meta={"starts": starts, **self._meta()}) and previous:
                health.write({})  # the previous run's loss is in the journal now
            self._start_upload()
            for factory in self._service_factories:
                service = factory(self)
                service.start()
                self._services.append(service)
            self._status_sent = self.status_text()
            systemd.ready(self._status_sent)
            self._loop()
        finally:
            systemd.stopping()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            lost = self._shutdown()
        return EXIT_COUNTS_LOST if lost else 0

    # -- the wall clock ------------------------------------------------------------------------

    def _clock_trusted(self) -> bool:
        """May pulses be placed by the wall clock now?  Yes with ``clock = "rtc"``/``"system"``,
        or once NTP has set the clock since this boot (remembered across daemon restarts)."""
        if self.config.device.trusts_clock_at_boot:
            return True
        boot = self.clock.boot_id()
        if self.clock.synchronized():
            if self._st().meta("clock_synced_boot") != boot:
                self._st().set_meta(clock_synced_boot=boot)
            return True
        return bool(self._st().meta("clock_synced_boot") == boot)

    def _start_run(self, now: float) -> int:
        """A new run record; on an unset clock it is marked to be moved into place later."""
        w = self._w()
        offset = None if w.clock_trusted else now - self.clock.boottime()
        return self._st().start_run(now=now, pid=os.getpid(), version=__version__,
                                    boot_id=self.clock.boot_id(), clock_offset=offset)

    def _check_clock_set(self) -> bool:
        """Place the held pulses once NTP has set the clock; True if that happened now."""
        w = self._w()
        if w.clock_trusted or not self.clock.synchronized():
            return False
        if not w.flush(meta=self._meta()):  # every held pulse in the table first
            return False
        self._st().set_meta(clock_synced_boot=self.clock.boot_id())
        return self._place_unplaced()

    def _place_unplaced(self) -> bool:
        """Move the pulses and runs kept on an unset clock into place; journal what moved."""
        w, store = self._w(), self._st()
        now, boottime = self.clock.now(), self.clock.boottime()
        try:
            p = store.place_unplaced(boot_id=self.clock.boot_id(), offset=now - boottime,
                                     now=w.change_time(now))
        except StorageError as e:
            log.error("could not place the pulses counted before the clock was set "
                      "(will try again): %s", e)
            return False
        w.clock_set(wall=now, step=p.behind_s)
        parts = []
        if p.pulses:
            how = (f"; the clock was {duration_text(abs(p.behind_s))} "
                   f"{'behind' if p.behind_s >= 0 else 'ahead'}")
            parts.append(f"placed {p.visitors} visitors ({p.pulses} pulse messages) counted "
                         f"before the clock was set in their true hours{how}")
        if p.estimated_pulses:
            parts.append(f"placed {p.estimated_visitors} visitors ({p.estimated_pulses} pulse "
                         f"messages) from an earlier boot that ended before its clock was set "
                         f"by the best estimate; their periods are flagged time-estimated")
        w.journal("INFO" if not p.estimated_pulses else "WARNING", "clock",
                  "the wall clock is set" + (": " + "; ".join(parts) if parts else
                                             "; no pulse was waiting"))
        w.flush(meta=self._meta())
        return True

    def _journal_previous_loss(self, record: dict[str, Any]) -> None:
        """Journal what the previous run could not write (from the health file)."""
        w = self._w()
        if "lost" in record:
            lost = record["lost"]
            held = Pending.from_dict(lost)
            span = f" {held.span_text()}" if held.span_text() else ""
            w.journal("ERROR", "counts-lost",
                      f"the previous run (pid {lost.get('pid')}) stopped on {lost.get('reason')} at "
                      f"{iso_utc(float(lost.get('at') or 0))} without writing its last counts: "
                      f"{held.visitors_in} in and {held.visitors_out} out ({held.pulses} pulse "
                      f"messages{span})"
                      + (f" and {held.answers} feedback press(es)" if held.answers else "")
                      + " were lost; the database could not be written: "
                      f"{lost.get('error')}")
        elif "writes_failing" in record:
            fail = record["writes_failing"]
            if pid_alive(fail.get("pid")) and fail.get("pid") != os.getpid():
                return  # another daemon is running on this database (it will say so)
            held = Pending.from_dict(fail.get("held") or {})
            w.journal("ERROR", "counts-lost",
                      f"the previous run (pid {fail.get('pid')}) ended (killed or a power cut) "
                      f"while writes had been failing since {iso_utc(float(fail.get('since') or 0))}: "
                      f"at least {held.visitors_in} in and {held.visitors_out} out held in memory "
                      f"were lost ({fail.get('error')})")

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

    def _forget_stale_totals(self) -> None:
        """Drop stored running totals of sensors that now count events: should they read
        totals again, the device's increase meanwhile was already counted as events."""
        w = self._w()
        for sc in self.config.sensors:
            if not reads_totals(sc):
                w.forget_totals(sc.id)

    def _start_sensors(self) -> None:
        self._forget_stale_totals()
        self.sensors = build_sensors(self.config, emit=self.queue.put, clock=self.clock,
                                     pin_factory=self.pin_factory, resume=self._w().totals)
        self._sensor_configs = {sc.id: sc for sc in self.config.sensors}
        started = sum(self._start_one(sensor) for sensor in self.sensors)
        if self.sensors and not started:
            self._w().journal("ERROR", "state",
                              "no sensor could be started; the daemon keeps running and tries "
                              "them again (a cable or device may come back)")

    def _start_one(self, sensor: Sensor) -> bool:
        """Start ``sensor``; on failure mark it down and schedule another attempt."""
        try:
            sensor.start()
        except SensorError as e:
            retry = self._retry.get(sensor.id) or _Retry(0, SENSOR_RETRY_MIN_S / 2, 0.0)
            delay = min(retry.delay * 2, SENSOR_RETRY_MAX_S)
            self._retry[sensor.id] = _Retry(retry.attempts + 1, delay,
                                            self.clock.monotonic() + delay)
            if retry.attempts == 0:
                self._w().handle(SensorEvent(
                    sensor.id, self.clock.now(), "state",
                    f"cannot start: {e}; trying again every {duration_text(delay)} or more",
                    "ERROR", "down"))
            return False
        done = self._retry.pop(sensor.id, None)
        if done is not None:
            self._w().journal("INFO", "state", f"started after {done.attempts + 1} attempts",
                              sensor_id=sensor.id)
        return True

    def _retry_sensors(self) -> None:
        """Try again to start the sensors that could not start, when their wait is over."""
        now = self.clock.monotonic()
        for i, sensor in enumerate(self.sensors):
            retry = self._retry.get(sensor.id)
            if retry is None or now < retry.at:
                continue
            self._stop_sensors([sensor])
            sc = self._sensor_configs[sensor.id]
            fresh = build_sensor(sc, emit=self.queue.put, clock=self.clock,
                                 timezone=self.config.device.timezone,
                                 pin_factory=self.pin_factory, resume=self._w().totals.get(sc.id))
            self.sensors[i] = fresh
            self._start_one(fresh)

    def status_text(self) -> str:
        """The one-line STATUS for ``systemctl status``: what counts, what does not, and why.

        For example ``counting on 1 of 2 sensors; east-gate down: /dev/ttyUSB0: No such
        file or directory``, with a leading ``WRITES FAILING …`` while flushes fail.
        """
        w = self._w()
        rows = w.sensor_rows
        working = sum(1 for r in rows if r.state in WORKING_STATES)
        parts = []
        if w.stats.failing_since is not None:
            held = w.held()
            parts.append(f"WRITES FAILING for {duration_text(self.clock.now() - w.stats.failing_since)}"
                         f" ({_short(w.stats.last_error or '')}); {held.visitors_in + held.visitors_out}"
                         f" visitors held in memory")
        parts.append(f"counting on {working} of {len(rows)} sensor{'s' if len(rows) != 1 else ''}")
        for r in rows:
            if r.state not in WORKING_STATES:
                parts.append(f"{r.sensor_id} {r.state}" + (f": {_short(r.message)}" if r.message else ""))
        return "; ".join(parts)

    def _update_status(self) -> None:
        text = self.status_text()
        if text != self._status_sent:
            self._status_sent = text
            systemd.status(text)

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
            },
            "clock": {"setting": self.config.device.clock, "trusted": w.clock_trusted,
                      "boot_id": self.clock.boot_id(),
                      "unplaced_in_memory": w.unplaced_pending},
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
        last_ping = last_clock_check = time.monotonic()
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
                systemd.reloading()
                error = self._do_reload()
                self._drain()  # the new sensors' first states, for READY's STATUS
                self._status_sent = self.status_text()
                systemd.reloaded(error, self._status_sent)  # READY=1: the reload is over
            now = clock.monotonic()
            if pending_since is None and writer.pending:
                pending_since = now
            if now - last_tick >= tick_every:
                last_tick = now
                wall, mono = clock.now(), now
                expected = last_wall + (mono - last_mono)
                if not writer.clock_trusted and (
                        abs(wall - expected) > JUMP_TOLERANCE_S * max(1.0, speed)
                        or time.monotonic() - last_clock_check >= CLOCK_CHECK_S):
                    last_clock_check = time.monotonic()
                    if self._check_clock_set():  # the step that set the clock is no jump
                        expected = wall = clock.now()
                self._check_clock(expected, wall)
                last_wall, last_mono = wall, mono
                for sensor in self.sensors:
                    sensor.tick(wall)
                if self._retry:
                    self._retry_sensors()
                self._check_wal()
                self._update_status()
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
                self._check_silent_terminals()
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
            w.run_id = self._start_run(wall)
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

    def _check_silent_terminals(self) -> None:
        """Journal (once per terminal and day, WARNING) a feedback terminal that had no press
        on a completed day on which visits were counted: a loose cable, a covered terminal."""
        terminals = [s.id for s in self.config.sensors if s.type in FEEDBACK_TYPES]
        if not terminals:
            return
        store, w = self._st(), self._w()
        try:
            told = dict(store.meta("feedback_silent_journalled") or {})
            tz = ZoneInfo(self.config.device.timezone)
            for sid in terminals:
                silent = silent_day(store, sid, tz, self.clock.now())
                if silent is not None and told.get(sid) != silent.day.isoformat():
                    w.journal("WARNING", "feedback-silent", silent.message(), sensor_id=sid)
                    told[sid] = silent.day.isoformat()
            w.flush(meta={**self._meta(), "feedback_silent_journalled": told})
        except Exception as e:  # counting goes on; the check runs again in an hour
            log.warning("could not check the feedback terminals: %s", e)

    def _do_reload(self) -> str | None:
        """Re-read the config; rebuild only the sensors and services whose config changed.

        Returns None when the new config is in effect, else why it was refused.

        A sensor whose :class:`~kiosk.config.SensorConfig` (type and options) is unchanged
        keeps running, so it drops no pulse; a changed one is closed and rebuilt; removed
        ones are closed and new ones started.  The upload service is rebuilt only when
        ``[upload]`` changed.
        """
        w = self._w()
        if not self.config_path:
            w.journal("WARNING", "config-reload", "SIGHUP ignored: no config file to re-read")
            return "no config file to re-read"
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            w.journal("ERROR", "config-reload",
                      f"config reload failed, keeping the running config: {e}")
            return f"config reload failed, keeping the running config: {e}"
        if new.storage.path != self.config.storage.path:
            w.journal("ERROR", "config-reload",
                      "config reload refused: [storage] path changed; restart the service")
            return "config reload refused: [storage] path changed; restart the service"
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
        self._forget_stale_totals()
        sensors: list[Sensor] = []
        restarted: list[str] = []
        added: list[str] = []
        old_ids = {s.id for s in gone}
        for sc in new.sensors:
            if sc.id in keep:
                sensors.append(keep[sc.id])
                continue
            # resumes from the writer's latest totals (the closed sensor's last reading)
            sensor = build_sensor(sc, emit=self.queue.put, clock=self.clock,
                                  timezone=new.device.timezone, pin_factory=self.pin_factory,
                                  resume=w.totals.get(sc.id))
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
        return None

    def _drain(self) -> None:
        while True:
            try:
                msg = self.queue.get_nowait()
            except queue.Empty:
                return
            if msg is not _WAKE:
                self._w().handle(msg)

    def _shutdown(self) -> Pending | None:
        """Stop services and sensors, write the last counts; returns what could not be written."""
        for service in reversed(self._services):
            try:
                service.stop()
            except Exception as e:
                log.error("error while stopping %r: %s", service, e)
        self._stop_upload()
        self._stop_sensors()
        w, store = self.writer, self.store
        if w is None or store is None:
            return None
        self._drain()
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "error"
        w.journal("INFO", "daemon-stop", f"stopping on {name}; writing the last counts")
        lost: Pending | None = None
        for attempt in range(5):
            if w.flush(meta=self._meta()):
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            lost = w.record_loss(reason=name)
        try:
            if w.run_id is not None:
                store.end_run(w.run_id, now=self.clock.now(), reason=name)
        except Exception as e:
            log.error("could not record the stop time: %s", e)
        store.close()
        if self.health is not None:
            self.health.close()
        return lost

    # -- the database's WAL file -------------------------------------------------------------

    def _wal_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database's ``-wal`` file, or None when there is none."""
        try:
            st = os.stat(self._st().path + "-wal")
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _check_wal(self) -> None:
        """Notice a ``-wal`` file deleted or replaced under the running daemon.

        SQLite keeps writing to the open (deleted) file, so the daemon's counts are safe,
        but every other reader then gets "disk I/O error".  The cure: checkpoint what the
        open WAL holds into the database file and reopen the connections (the upload
        service's too), which makes a new ``-wal`` file.
        """
        seen = self._wal_identity()
        if seen == self._wal_id or self._wal_id is None:
            self._wal_id = seen if self._wal_id is None else self._wal_id
            return
        w = self._w()
        what = "deleted" if seen is None else "replaced by another file"
        w.journal("ERROR", "storage",
                  f"{self._st().path}-wal was {what} while the daemon was running (a cleanup "
                  f"script or a manual rm?); checkpointing it and reopening the database so "
                  f"that nothing is lost and readers work again")
        self._reopen_store()

    def _reopen_store(self) -> None:
        """Checkpoint, close and reopen the database (the upload service with it)."""
        w, store = self._w(), self._st()
        had_upload = self._upload is not None
        self._stop_upload()
        w.flush(meta=self._meta())
        try:
            store.checkpoint()
            store.close()
            self.store = store = Store.open(self.config.storage.path)
        except StorageError as e:
            log.error("could not reopen the database: %s", e)
            return
        w.store = store
        self._wal_id = self._wal_identity()
        if had_upload:
            self._start_upload()
        w.journal("INFO", "storage", "database reopened; its -wal file is in place again")
        w.flush(meta=self._meta())


class _Retry(NamedTuple):
    """When a sensor that could not start is tried again."""

    attempts: int  #: failed start attempts so far
    delay: float  #: clock seconds waited before this attempt
    at: float  #: clock monotonic time of the next attempt


def _short(text: str, limit: int = 90) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
