"""The writer: the one owner of SQLite.

It takes the messages sensors enqueued, adds them up in memory, and flushes them
in one transaction.  If a flush fails (disk full, database locked) nothing is
dropped: the pending counts stay in memory and the next flush tries again.

Two kinds of data wait in memory (SD-card wear, see the README's durability promise):

* *urgent*: counts, answers of feedback terminals, journal lines and sensor state changes.
  :attr:`Writer.pending` says some wait; the daemon writes them within ``flush_interval_s``.
* *lazy*: raw events (the ``events`` and ``feedback_events`` tables) and the sensors'
  last-pulse times.  A plain
  :meth:`Writer.flush` leaves them in memory; ``flush(events=True)`` adds the raw
  events and a heartbeat (``flush(meta=...)``) writes everything.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field

from kiosk.clock import Clock
from kiosk.events import Answer, Message, Pulse, Rejected, SensorEvent, TotalsState
from kiosk.exc import StorageError
from kiosk.periods import duration_text
from kiosk.store import JournalEntry, SensorRow, Store, UnplacedPulse, bucket_start
from kiosk.store.feedback import AnswerEvent, AnswerKey, UnplacedAnswer
from kiosk.store.health import HealthFile, Pending

log = logging.getLogger("kiosk.writer")

#: Seconds between two log/journal lines about rejected serial lines of one sensor.
REJECT_LOG_INTERVAL_S = 60.0
#: Clock seconds after the clock was set during which a pulse stamped on the unset clock may
#: still arrive (a beam broken before the step, released after it; stuck_after_s is 30 s).
LATE_STAMP_S = 120.0
#: A step of the clock at least this large (s) moves such late stamps.
LATE_STAMP_TOLERANCE_S = 5.0
#: Clock seconds between two rewrites of the health file while writes keep failing.
HEALTH_EVERY_S = 10.0


@dataclass
class _RejectLog:
    last_logged: float = float("-inf")
    since_logged: int = 0


@dataclass
class FlushStats:
    """What the writer has done, for status, benchmarks and the watchdog."""

    flushes: int = 0
    failures: int = 0
    pulses: int = 0  #: Raw events written.
    visitors: int = 0
    last_flush: float | None = None  #: Clock wall time of the last successful flush.
    last_error: str | None = None
    failing_since: float | None = None  #: Clock wall time of the first failed flush in a row.
    pending_by_sensor: dict[str, list[int]] = field(default_factory=dict)


class Writer:
    """Aggregates queue messages and writes them to a :class:`Store`.

    :param store: the database (opened for writing).
    :param clock: the clock; used only for flush times and journal lines.
    :param sensor_kinds: sensor id -> kind, for the ``sensors`` table.
    :param health: the health file to tell when writes fail (the daemon's; None in tests
        and tools that need none).
    """

    def __init__(self, store: Store, *, clock: Clock, sensor_kinds: dict[str, str],
                 health: HealthFile | None = None) -> None:
        self.store = store
        self.clock = clock
        self.health = health
        #: False while the wall clock is not set (``[device] clock = "ntp"`` before NTP has
        #: answered): pulses are then kept unplaced, with their boot time, not in buckets.
        self.clock_trusted = True
        self._boot_id = clock.boot_id()
        self._unplaced: list[UnplacedPulse] = []
        self._late: tuple[float, float, float] | None = None  # see clock_set
        self._floor = (0.0, clock.monotonic())  # (wall UTC s, monotonic s) of the last change
        self._health_at = float("-inf")
        self._held_pulses = 0  # pulse messages since the last successful flush
        self._held_first: float | None = None
        self._held_last: float | None = None
        self.run_id: int | None = None
        self.stats = FlushStats()
        self._counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._events: list[tuple[float, str, str, int]] = []
        #: [answers, repeated] per feedback bucket key, their raw presses, and presses taken
        #: while the clock is untrusted (kept with their boot time, placed like pulses)
        self._answers: dict[AnswerKey, list[int]] = defaultdict(lambda: [0, 0])
        self._answer_events: list[AnswerEvent] = []
        self._unplaced_answers: list[UnplacedAnswer] = []
        self._journal: list[JournalEntry] = []
        self._rejects: dict[str, _RejectLog] = {}
        self._dirty_sensors: set[str] = set()  # state or rejected lines changed: write now
        self._pulse_seen: set[str] = set()  # only last_pulse moved: write with the heartbeat
        self._sensors: dict[str, SensorRow] = {}
        #: The latest running totals of each cumulative serial sensor (stored or in memory):
        #: what a sensor rebuilt by a reload resumes from.
        self.totals: dict[str, TotalsState] = {}
        self._totals_dirty: set[str] = set()
        self._totals_forget: set[str] = set()
        self.set_sensors(sensor_kinds)

    def set_sensors(self, sensor_kinds: dict[str, str]) -> None:
        """(Re)declare the configured sensors; keeps the state of those that stay."""
        old = self._sensors
        self._sensors = {}
        for sid, kind in sensor_kinds.items():
            row = old.get(sid) or SensorRow(sid, kind, "starting", state_since=self.clock.now())
            row.kind = kind
            self._sensors[sid] = row
            self._dirty_sensors.add(sid)

    def load_sensor_history(self) -> None:
        """Carry last pulse times and rejected-line totals over from the database, and the
        newest change time of the counts (so ``updated_at`` never goes back)."""
        self._floor = (self.store.latest_change(), self.clock.monotonic())
        for row in self.store.sensor_rows():
            mine = self._sensors.get(row["sensor_id"])
            if mine is not None:
                mine.last_pulse = row["last_pulse"]
                mine.rejected_lines = row["rejected_lines"] or 0

    def load_totals(self) -> None:
        """Take the running totals stored by the last run (resumed by the serial sensors)."""
        self.totals.update(self.store.serial_totals())

    def forget_totals(self, sensor_id: str) -> None:
        """Drop a sensor's running totals (it no longer reads them); written at the next flush."""
        if self.totals.pop(sensor_id, None) is not None:
            self._totals_forget.add(sensor_id)
            self._totals_dirty.discard(sensor_id)

    # -- messages ---------------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        """Take one message from the queue (cheap: memory only)."""
        if type(msg) is Pulse:
            if not self.clock_trusted:
                self._keep_unplaced(msg)
                return
            ts = msg.ts if self._late is None else self._late_stamp(msg.ts)
            c = self._counts[(msg.sensor_id, bucket_start(ts))]
            c[0 if msg.direction == "in" else 1] += msg.count
            self._events.append((ts, msg.sensor_id, msg.direction, msg.count))
            self._held_pulses += 1
            if self._held_first is None or ts < self._held_first:
                self._held_first = ts
            if self._held_last is None or ts > self._held_last:
                self._held_last = ts
            row = self._sensors.get(msg.sensor_id)
            if row is not None and (row.last_pulse is None or ts > row.last_pulse):
                row.last_pulse = ts
                self._pulse_seen.add(msg.sensor_id)
        elif type(msg) is Answer:
            self._answer(msg)
        elif type(msg) is TotalsState:
            old = self.totals.get(msg.sensor_id)
            self.totals[msg.sensor_id] = msg
            if old is None or (old.port, old.totals_in, old.totals_out) != (
                    msg.port, msg.totals_in, msg.totals_out):
                self._totals_dirty.add(msg.sensor_id)  # unchanged totals: nothing to write
                self._totals_forget.discard(msg.sensor_id)
        elif isinstance(msg, SensorEvent):
            self._sensor_event(msg)
        elif isinstance(msg, Rejected):
            self._rejected(msg)
        else:
            log.error("writer: ignoring unknown message %r", msg)

    def clock_set(self, *, wall: float, step: float) -> None:
        """The wall clock was set at ``wall`` (UTC s) by a step of ``step`` seconds: from now
        on pulses go to their buckets.  A pulse stamped on the unset clock but handed over
        only now (a beam broken before the step and released after it) is moved by the step
        too, for :data:`LATE_STAMP_S` clock seconds."""
        self.clock_trusted = True
        self._late = None if abs(step) <= LATE_STAMP_TOLERANCE_S else \
            (wall, step, self.clock.monotonic() + LATE_STAMP_S)

    def _late_stamp(self, ts: float) -> float:
        assert self._late is not None
        wall, step, until = self._late
        if self.clock.monotonic() > until:
            self._late = None
            return ts
        # on the unset clock, a moment before the step reads ``step`` seconds off
        if (step > 0 and ts < wall - step / 2) or (step < 0 and ts > wall - step / 2):
            return ts + step
        return ts

    def _answer(self, msg: Answer) -> None:
        """Add one press of a feedback terminal to its bucket (or keep it unplaced)."""
        if not self.clock_trusted:
            boottime = msg.boottime
            if boottime is None:
                boottime = self.clock.boottime() - (self.clock.now() - msg.ts)
            self._unplaced_answers.append(UnplacedAnswer(
                self._boot_id, boottime, msg.ts, msg.sensor_id, msg.level, msg.rank, msg.scale,
                msg.repeated))
            return
        key = AnswerKey(msg.sensor_id, bucket_start(msg.ts), msg.level, msg.rank, msg.scale)
        self._answers[key][1 if msg.repeated else 0] += 1
        self._answer_events.append(AnswerEvent(msg.ts, msg.sensor_id, msg.level, msg.rank,
                                               msg.scale, msg.repeated))
        row = self._sensors.get(msg.sensor_id)
        if row is not None and (row.last_pulse is None or msg.ts > row.last_pulse):
            row.last_pulse = msg.ts
            self._pulse_seen.add(msg.sensor_id)

    def _keep_unplaced(self, msg: Pulse) -> None:
        boottime = msg.boottime
        if boottime is None:  # the same moment on the boot clock (the pulse is fresh)
            boottime = self.clock.boottime() - (self.clock.now() - msg.ts)
        self._unplaced.append(UnplacedPulse(self._boot_id, boottime, msg.ts, msg.sensor_id,
                                            msg.direction, msg.count))
        self._held_pulses += 1

    def change_time(self, now: float) -> float:
        """The ``updated_at`` (UTC s) for counts changed at wall time ``now``: ``now``, or
        more when the wall clock was stepped back since the last change, so that it goes on
        from where it was.  The uploader's scan finds changes by ``updated_at``; a clock
        stepped back 3 h would otherwise hide every re-lived period from it."""
        wall, mono = self._floor
        return max(now, wall + (self.clock.monotonic() - mono))

    @property
    def unplaced_pending(self) -> int:
        """Pulse messages held unplaced in memory (not yet written)."""
        return len(self._unplaced)

    def _sensor_event(self, msg: SensorEvent) -> None:
        row = self._sensors.get(msg.sensor_id)
        if row is not None and msg.state is not None and msg.state != row.state:
            row.state = msg.state
            row.state_since = msg.ts
            row.message = msg.message
            self._dirty_sensors.add(msg.sensor_id)
        self.journal(msg.level, msg.kind, msg.message, sensor_id=msg.sensor_id, ts=msg.ts)

    def _rejected(self, msg: Rejected) -> None:
        row = self._sensors.get(msg.sensor_id)
        if row is not None:
            row.rejected_lines += 1
            self._dirty_sensors.add(msg.sensor_id)
        rl = self._rejects.setdefault(msg.sensor_id, _RejectLog())
        rl.since_logged += 1
        if msg.ts - rl.last_logged >= REJECT_LOG_INTERVAL_S:
            more = f" ({rl.since_logged} rejected since the last report)" if rl.since_logged > 1 else ""
            self.journal(
                "WARNING", "rejected-line",
                f"rejected a serial line: {msg.reason}; sample: {msg.sample!r}{more}",
                sensor_id=msg.sensor_id, ts=msg.ts,
            )
            rl.last_logged = msg.ts
            rl.since_logged = 0

    def journal(self, level: str, kind: str, message: str, *, sensor_id: str | None = None,
                ts: float | None = None) -> None:
        """Log a line to stderr now and keep it for the local journal at the next flush."""
        entry = JournalEntry(self.clock.now() if ts is None else ts, level, kind, message, sensor_id)
        self._journal.append(entry)
        prefix = f"{sensor_id}: " if sensor_id else ""
        log.log(logging.getLevelNamesMapping().get(level, logging.INFO), "%s%s", prefix, message)

    # -- flushing ---------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """True if urgent data (counts, journal lines, state changes, pulses waiting for the
        clock, serial running totals) waits to be written."""
        return bool(self._counts or self._journal or self._dirty_sensors or self._unplaced
                    or self._totals_dirty or self._totals_forget or self._answers
                    or self._unplaced_answers)

    @property
    def events_pending(self) -> int:
        """Raw events held in memory, not yet written."""
        return len(self._events) + len(self._answer_events)

    def pending_answers(self) -> dict[str, list[int]]:
        """Per feedback terminal [answers, repeated] not yet written (placed or not)."""
        out: dict[str, list[int]] = {}
        for key, (a, r) in self._answers.items():
            acc = out.setdefault(key.sensor_id, [0, 0])
            acc[0] += a
            acc[1] += r
        for u in self._unplaced_answers:
            out.setdefault(u.sensor_id, [0, 0])[1 if u.repeated else 0] += 1
        return out

    @property
    def sensor_rows(self) -> list[SensorRow]:
        """The configured sensors' latest rows (state, message), in config order."""
        return list(self._sensors.values())

    def held(self) -> Pending:
        """What is in memory and not yet in the database (pulses since the last good flush)."""
        vin = sum(c[0] for c in self._counts.values())
        vout = sum(c[1] for c in self._counts.values())
        vin += sum(u.visitors for u in self._unplaced if u.direction == "in")
        vout += sum(u.visitors for u in self._unplaced if u.direction == "out")
        answers = sum(a + r for a, r in self.pending_answers().values())
        return Pending(self._held_pulses, vin, vout, self._held_first, self._held_last, answers)

    def pending_visitors(self) -> dict[str, list[int]]:
        """Per sensor [in, out] not yet written."""
        out: dict[str, list[int]] = {}
        for (sid, _b), (i, o) in self._counts.items():
            acc = out.setdefault(sid, [0, 0])
            acc[0] += i
            acc[1] += o
        return out

    def flush(self, *, meta: dict | None = None, events: bool = False) -> bool:
        """Write what is pending in one transaction.  Returns True on success.

        A plain flush writes the urgent data only: counts, journal lines and state
        changes, which keeps the pages rewritten per commit (SD-card wear) to a minimum.
        ``events=True`` also writes the raw events held in memory.  A flush with ``meta``
        is a heartbeat and writes everything: the raw events, the sensors' last-pulse
        times, the running record's ``last_seen`` (moved to now) and ``meta``.

        On failure the pending data stays in memory for the next try, the error is
        logged (once per distinct message) and kept in :attr:`stats`.
        """
        now = self.clock.now()
        counts = dict(self._counts)
        answers = dict(self._answers)
        heartbeat = meta is not None
        events = events or heartbeat
        dirty = self._dirty_sensors | self._pulse_seen if heartbeat else self._dirty_sensors
        changed_at = self.change_time(now)
        try:
            self.store.write_batch(
                now=now,
                counts=counts,
                events=self._events if events else (),
                sensors=[self._sensors[s] for s in sorted(dirty) if s in self._sensors],
                journal=self._journal,
                run_id=self.run_id if heartbeat else None,
                meta=meta,
                unplaced=self._unplaced,
                changed_at=changed_at,
                totals=[self.totals[s] for s in sorted(self._totals_dirty) if s in self.totals],
                forget_totals=sorted(self._totals_forget),
                feedback=answers,
                feedback_events=self._answer_events if events else (),
                unplaced_answers=self._unplaced_answers,
            )
        except StorageError as e:
            self._failed(now, str(e))
            return False
        if self.stats.failing_since is not None:
            self._recovered(now)
        self.stats.flushes += 1
        self.stats.visitors += sum(i + o for i, o in counts.values())
        self.stats.last_flush = now
        self._floor = (changed_at, self.clock.monotonic())
        self._counts.clear()
        self._unplaced.clear()
        self._answers.clear()
        self._unplaced_answers.clear()
        if events:
            self.stats.pulses += len(self._events)
            self._events.clear()
            self._answer_events.clear()
        self._journal.clear()
        self._dirty_sensors.clear()
        self._held_pulses = 0
        self._held_first = self._held_last = None
        self._totals_dirty.clear()
        self._totals_forget.clear()
        if heartbeat:
            self._pulse_seen.clear()
        return True

    # -- when writes fail -------------------------------------------------------------------

    def _failed(self, now: float, error: str) -> None:
        st = self.stats
        st.failures += 1
        if error != st.last_error:
            log.error("cannot write counts, keeping them in memory and retrying: %s", error)
        st.last_error = error
        first = st.failing_since is None
        if first:
            st.failing_since = now
        if self.health is not None and (first or now - self._health_at >= HEALTH_EVERY_S):
            self._health_at = now
            self.health.write({"writes_failing": {
                "since": st.failing_since, "error": error, "failures": st.failures,
                "updated_at": now, "pid": os.getpid(), "held": self.held().as_dict()}})

    def _recovered(self, now: float) -> None:
        st = self.stats
        since = st.failing_since if st.failing_since is not None else now
        self.journal("WARNING", "storage",
                     f"writing the database works again after {duration_text(now - since)}; "
                     f"{st.failures} flush(es) had failed, every count held meanwhile is stored "
                     f"(the error was: {st.last_error})")
        st.failing_since = None
        st.last_error = None
        st.failures = 0
        if self.health is not None:
            self.health.write({})

    def record_loss(self, *, reason: str) -> Pending:
        """The last flush failed and the daemon stops: put exactly what is lost in the health
        file (the next start journals it) and on stderr.  Returns what was lost."""
        lost = self.held()
        now = self.clock.now()
        error = self.stats.last_error or "unknown error"
        span = f", {lost.span_text()}" if lost.span_text() else ""
        log.critical("stopping on %s without writing the last counts: %d in, %d out (%d pulse "
                     "messages%s) and %d feedback press(es) are lost: %s", reason,
                     lost.visitors_in, lost.visitors_out, lost.pulses, span, lost.answers, error)
        if self.health is not None:
            self.health.write({"lost": {"at": now, "reason": reason, "error": error,
                                        "pid": os.getpid(), "since": self.stats.failing_since,
                                        **lost.as_dict()}})
        return lost
