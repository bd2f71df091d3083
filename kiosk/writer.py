"""The writer: the one owner of SQLite.

It takes the messages sensors enqueued, adds them up in memory, and flushes them
in one transaction.  If a flush fails (disk full, database locked) nothing is
dropped: the pending counts stay in memory and the next flush tries again.

Two kinds of data wait in memory (SD-card wear, see the README's durability promise):

* *urgent*: counts, journal lines and sensor state changes.  :attr:`Writer.pending`
  says some wait; the daemon writes them within ``flush_interval_s``.
* *lazy*: raw events (the ``events`` table) and the sensors' last-pulse times.  A plain
  :meth:`Writer.flush` leaves them in memory; ``flush(events=True)`` adds the raw
  events and a heartbeat (``flush(meta=...)``) writes everything.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from kiosk.clock import Clock
from kiosk.events import Message, Pulse, Rejected, SensorEvent
from kiosk.exc import StorageError
from kiosk.store import JournalEntry, SensorRow, Store, bucket_start

log = logging.getLogger("kiosk.writer")

#: Seconds between two log/journal lines about rejected serial lines of one sensor.
REJECT_LOG_INTERVAL_S = 60.0


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
    pending_by_sensor: dict[str, list[int]] = field(default_factory=dict)


class Writer:
    """Aggregates queue messages and writes them to a :class:`Store`.

    :param store: the database (opened for writing).
    :param clock: the clock; used only for flush times and journal lines.
    :param sensor_kinds: sensor id -> kind, for the ``sensors`` table.
    """

    def __init__(self, store: Store, *, clock: Clock, sensor_kinds: dict[str, str]) -> None:
        self.store = store
        self.clock = clock
        self.run_id: int | None = None
        self.stats = FlushStats()
        self._counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._events: list[tuple[float, str, str, int]] = []
        self._journal: list[JournalEntry] = []
        self._rejects: dict[str, _RejectLog] = {}
        self._dirty_sensors: set[str] = set()  # state or rejected lines changed: write now
        self._pulse_seen: set[str] = set()  # only last_pulse moved: write with the heartbeat
        self._sensors: dict[str, SensorRow] = {}
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
        """Carry last pulse times and rejected-line totals over from the database."""
        for row in self.store.sensor_rows():
            mine = self._sensors.get(row["sensor_id"])
            if mine is not None:
                mine.last_pulse = row["last_pulse"]
                mine.rejected_lines = row["rejected_lines"] or 0

    # -- messages ---------------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        """Take one message from the queue (cheap: memory only)."""
        if type(msg) is Pulse:
            c = self._counts[(msg.sensor_id, bucket_start(msg.ts))]
            c[0 if msg.direction == "in" else 1] += msg.count
            self._events.append((msg.ts, msg.sensor_id, msg.direction, msg.count))
            row = self._sensors.get(msg.sensor_id)
            if row is not None and (row.last_pulse is None or msg.ts > row.last_pulse):
                row.last_pulse = msg.ts
                self._pulse_seen.add(msg.sensor_id)
        elif isinstance(msg, SensorEvent):
            self._sensor_event(msg)
        elif isinstance(msg, Rejected):
            self._rejected(msg)
        else:
            log.error("writer: ignoring unknown message %r", msg)

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
        """True if urgent data (counts, journal lines, state changes) waits to be written."""
        return bool(self._counts or self._journal or self._dirty_sensors)

    @property
    def events_pending(self) -> int:
        """Raw events held in memory, not yet written."""
        return len(self._events)

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
        heartbeat = meta is not None
        events = events or heartbeat
        dirty = self._dirty_sensors | self._pulse_seen if heartbeat else self._dirty_sensors
        try:
            self.store.write_batch(
                now=now,
                counts=counts,
                events=self._events if events else (),
                sensors=[self._sensors[s] for s in sorted(dirty) if s in self._sensors],
                journal=self._journal,
                run_id=self.run_id if heartbeat else None,
                meta=meta,
            )
        except StorageError as e:
            self.stats.failures += 1
            if str(e) != self.stats.last_error:
                log.error("cannot write counts, keeping them in memory and retrying: %s", e)
            self.stats.last_error = str(e)
            return False
        if self.stats.last_error is not None:
            log.warning("writing counts works again; %d flush(es) had failed", self.stats.failures)
            self.stats.last_error = None
        self.stats.flushes += 1
        self.stats.visitors += sum(i + o for i, o in counts.values())
        self.stats.last_flush = now
        self._counts.clear()
        if events:
            self.stats.pulses += len(self._events)
            self._events.clear()
        self._journal.clear()
        self._dirty_sensors.clear()
        if heartbeat:
            self._pulse_seen.clear()
        return True
