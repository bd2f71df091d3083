"""Pulses counted before the clock was set: ``unplaced`` and ``time_estimated``.

A Raspberry Pi has no battery clock.  Until NTP answers, the daemon (with ``[device] clock =
"ntp"``) keeps each pulse in ``unplaced`` with the kernel's boot id and ``CLOCK_BOOTTIME``,
which is right while the wall clock is not.  When the clock is set, :meth:`place_unplaced`
moves them into ``counts`` at ``wall_at_sync - (boottime_at_sync - boottime_of_pulse)``.
Pulses of an earlier boot that ended before its clock was set can only be placed by the best
estimate (the wall time they were stamped with, kept before this boot began); their buckets
are recorded in ``time_estimated`` and flagged ``time-estimated`` in uploads, exports and
reports.  The daemon's run records made on an unset clock are moved the same way.
All times are UTC seconds; boot times are seconds since that boot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from kiosk.buckets import BUCKET_S, bucket_start
from kiosk.store.feedback import FEEDBACK_MIGRATION, place_unplaced_answers


class UnplacedPulse(NamedTuple):
    """One pulse message counted while the wall clock was not set."""

    boot_id: str
    boottime: float  #: seconds since that boot (CLOCK_BOOTTIME)
    wall: float  #: what the unset wall clock said (UTC s)
    sensor_id: str
    direction: str
    visitors: int  #: the pulse message's count


class Placement(NamedTuple):
    """What :meth:`PlacementMixin.place_unplaced` did."""

    pulses: int  #: pulse messages placed by boot time (this boot)
    visitors: int  #: visitors in them
    estimated_pulses: int  #: pulse messages of earlier boots placed by estimate
    estimated_visitors: int
    answers: int = 0  #: feedback presses placed (answers and repeated, every boot)
    behind_s: float = 0.0  #: how far the wall clock was behind in this boot (s; < 0: ahead; 0: unknown)
    first: float | None = None  #: the earliest placed moment (UTC s)


def insert_unplaced(conn: sqlite3.Connection, rows: Sequence[UnplacedPulse]) -> None:
    """Keep ``rows`` inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO unplaced (boot_id, boottime, wall, sensor_id, direction, count)"
        " VALUES (?, ?, ?, ?, ?, ?)", rows)


class PlacementMixin:
    """Operations of :class:`kiosk.store.Store` on ``unplaced`` and ``time_estimated``."""

    conn: sqlite3.Connection

    def unplaced_summary(self) -> tuple[int, int]:
        """(pulse messages, visitors) waiting for the clock to be set."""
        row = self.conn.execute("SELECT count(*), coalesce(sum(count), 0) FROM unplaced").fetchone()
        return int(row[0]), int(row[1])

    def needs_placement(self) -> bool:
        """True if pulses, presses or runs wait to be placed (kept on an unset clock)."""
        answers = (" OR EXISTS (SELECT 1 FROM feedback_unplaced)"
                   if FEEDBACK_MIGRATION not in self.pending_migrations else "")  # type: ignore[attr-defined]
        return self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM unplaced)"
            " OR EXISTS (SELECT 1 FROM runs WHERE clock_offset IS NOT NULL)" + answers
        ).fetchone()[0] == 1

    def time_estimated(self, sensor_id: str, start: float, end: float) -> bool:
        """True if a bucket of ``sensor_id`` overlapping [start, end) (UTC s) holds pulses
        placed by estimate."""
        return self.conn.execute(
            "SELECT 1 FROM time_estimated WHERE sensor_id = ? AND start > ? AND start < ? LIMIT 1",
            (sensor_id, start - BUCKET_S, end)).fetchone() is not None

    def time_estimated_buckets(self, lo: float, hi: float) -> list[tuple[str, int]]:
        """(sensor_id, bucket start) of the time-estimated buckets overlapping [lo, hi) (UTC s),
        sorted by sensor and start."""
        return [(sid, int(start)) for sid, start in self.conn.execute(
            "SELECT sensor_id, start FROM time_estimated WHERE start > ? AND start < ?"
            " ORDER BY sensor_id, start", (lo - BUCKET_S, hi))]

    def place_unplaced(self, *, boot_id: str, offset: float, now: float) -> Placement:
        """Move every unplaced pulse and run into place, in one transaction.

        ``offset`` is ``wall - boottime`` of the now-synchronised clock in boot ``boot_id``
        (UTC s); ``now`` is the time the changed counts are stamped with (``updated_at``).
        """
        with self.write() as conn:  # type: ignore[attr-defined]
            rows = [UnplacedPulse(*r) for r in conn.execute(
                "SELECT boot_id, boottime, wall, sensor_id, direction, count FROM unplaced"
                " ORDER BY boot_id, boottime")]
            error = _error_of_this_boot(conn, rows, boot_id, offset)
            shifts = _older_boot_shifts(conn, rows, boot_id, offset, error)
            placed: dict[tuple[str, int], list[int]] = {}
            estimated: set[tuple[str, int]] = set()
            events = []
            n = v = en = ev = 0
            first: float | None = None
            for r in rows:
                if r.boot_id == boot_id:
                    ts = offset + r.boottime
                    n, v = n + 1, v + r.visitors
                else:
                    ts = r.wall + shifts[r.boot_id]
                    estimated.add((r.sensor_id, bucket_start(ts)))
                    en, ev = en + 1, ev + r.visitors
                first = ts if first is None else min(first, ts)
                c = placed.setdefault((r.sensor_id, bucket_start(ts)), [0, 0])
                c[0 if r.direction == "in" else 1] += r.visitors
                events.append((ts, r.sensor_id, r.direction, r.visitors))
            conn.executemany(
                "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sensor_id, start) DO UPDATE SET"
                " in_count = in_count + excluded.in_count,"
                " out_count = out_count + excluded.out_count, updated_at = excluded.updated_at",
                [(s, b, c[0], c[1], now) for (s, b), c in placed.items()])
            conn.executemany(
                "INSERT INTO events (ts, sensor_id, direction, count) VALUES (?, ?, ?, ?)", events)
            conn.executemany("INSERT OR IGNORE INTO time_estimated (sensor_id, start) VALUES (?, ?)",
                             sorted(estimated))
            conn.execute("DELETE FROM unplaced")
            answers = 0
            if FEEDBACK_MIGRATION not in self.pending_migrations:  # type: ignore[attr-defined]
                answers, _estimated = place_unplaced_answers(conn, boot_id=boot_id,
                                                             offset=offset, shifts=shifts, now=now)
            _place_runs(conn, boot_id, offset, shifts)
        return Placement(n, v, en, ev, answers, error, first)


def _error_of_this_boot(conn: sqlite3.Connection, rows: Sequence[UnplacedPulse], boot_id: str,
                        offset: float) -> float:
    """How far (s) this boot's unset clock was behind the true time (0 when unknown)."""
    row = conn.execute("SELECT min(clock_offset) FROM runs WHERE boot_id = ?"
                       " AND clock_offset IS NOT NULL", (boot_id,)).fetchone()
    if row[0] is not None:
        return offset - float(row[0])
    mine = [r.wall - r.boottime for r in rows if r.boot_id == boot_id]
    return offset - min(mine) if mine else 0.0


def _older_boot_shifts(conn: sqlite3.Connection, rows: Sequence[UnplacedPulse], boot_id: str,
                       offset: float, error: float) -> dict[str, float]:
    """Seconds to add to the stamped wall times of each earlier boot.

    The best estimate is this boot's own error: fake-hwclock starts a boot at the time the
    previous one saved when it went down, so an earlier boot's clock was behind by as much,
    less the (unknown) time the machine was off.  Its pulses and runs must end before this
    boot began (``offset``, UTC s), so the shift is cut to keep them there.
    """
    latest: dict[str, float] = {}
    for r in rows:
        if r.boot_id != boot_id:
            latest[r.boot_id] = max(latest.get(r.boot_id, r.wall), r.wall)
    for bid, last in conn.execute(
            "SELECT boot_id, max(coalesce(stopped_at, last_seen)) FROM runs"
            " WHERE clock_offset IS NOT NULL AND boot_id IS NOT NULL AND boot_id != ?"
            " GROUP BY boot_id", (boot_id,)):
        latest[bid] = max(latest.get(bid, last), last)
    return {bid: min(error, offset - 1.0 - last) for bid, last in latest.items()}


def _place_runs(conn: sqlite3.Connection, boot_id: str, offset: float,
                shifts: dict[str, float]) -> None:
    """Move the runs recorded on an unset clock: this boot's exactly, earlier boots' by their
    estimated shift."""
    conn.execute(
        "UPDATE runs SET started_at = started_at + (? - clock_offset),"
        " last_seen = last_seen + (? - clock_offset),"
        " stopped_at = stopped_at + (? - clock_offset), clock_offset = NULL"
        " WHERE boot_id = ? AND clock_offset IS NOT NULL", (offset, offset, offset, boot_id))
    for bid, shift in shifts.items():
        conn.execute(
            "UPDATE runs SET started_at = started_at + ?, last_seen = last_seen + ?,"
            " stopped_at = stopped_at + ?, clock_offset = NULL"
            " WHERE boot_id = ? AND clock_offset IS NOT NULL", (shift, shift, shift, bid))
    # an earlier boot with runs but no pulses keeps its stamped times
    conn.execute("UPDATE runs SET clock_offset = NULL WHERE clock_offset IS NOT NULL")
