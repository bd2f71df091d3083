"""Visitors' answers on feedback terminals: ``feedback``, ``feedback_events`` and
``feedback_unplaced`` (migration m007).

``feedback`` holds 15-minute buckets per terminal (``sensor_id``), UTC bucket start and
level: the answers and the repeated presses (within ``lockout_s`` of the previous press;
kept, left out of scores).  Each row also carries the level's ``rank`` (0 = best) and the
terminal's ``scale`` (number of levels), so a score can be computed from the rows alone:
``100 * (scale - 1 - rank) / (scale - 1)``.  The writer adds to it in the same transaction
as the visit counts (:meth:`kiosk.store.Store.write_batch`), under the same durability
promise.  ``feedback_events`` is the raw press log (pruned like ``events``).
``feedback_unplaced`` keeps presses taken while the wall clock was not set, with their boot
time, until the clock is set: they are then placed like unplaced pulses
(:mod:`kiosk.store.placement`).  All times are UTC seconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from kiosk.buckets import bucket_start

FEEDBACK_MIGRATION = "m007_feedback"


class AnswerKey(NamedTuple):
    """One bucket row's key and level facts."""

    sensor_id: str
    start: int  #: UTC bucket start (multiple of 900)
    level: str
    rank: int  #: 0 = best
    scale: int  #: levels of the terminal


class AnswerTally(NamedTuple):
    """Answers and repeated presses (of one bucket row, or summed)."""

    answers: int
    repeated: int


class AnswerEvent(NamedTuple):
    """One raw press, as stored in ``feedback_events``."""

    ts: float
    sensor_id: str
    level: str
    rank: int
    scale: int
    repeated: bool


class UnplacedAnswer(NamedTuple):
    """One press taken while the wall clock was not set."""

    boot_id: str
    boottime: float  #: seconds since that boot (CLOCK_BOOTTIME)
    wall: float  #: what the unset wall clock said (UTC s)
    sensor_id: str
    level: str
    rank: int
    scale: int
    repeated: bool


class FeedbackRow(NamedTuple):
    """One level of one terminal summed over some buckets."""

    sensor_id: str
    level: str
    rank: int
    scale: int
    answers: int
    repeated: int


def add_feedback(conn: sqlite3.Connection, tallies: dict[AnswerKey, list[int]],
                 changed_at: float) -> None:
    """Add ``tallies`` ([answers, repeated] per key) inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO feedback (sensor_id, start, level, rank, scale, answers, repeated,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (sensor_id, start, level) DO UPDATE SET"
        " answers = answers + excluded.answers, repeated = repeated + excluded.repeated,"
        " rank = excluded.rank, scale = excluded.scale, updated_at = excluded.updated_at",
        [(*k, a, r, changed_at) for k, (a, r) in tallies.items()])


def insert_feedback_events(conn: sqlite3.Connection, events: Iterable[AnswerEvent]) -> None:
    """Keep raw presses inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO feedback_events (ts, sensor_id, level, rank, scale, repeated)"
        " VALUES (?, ?, ?, ?, ?, ?)", [(*e[:5], int(e.repeated)) for e in events])


def insert_unplaced_answers(conn: sqlite3.Connection, rows: Sequence[UnplacedAnswer]) -> None:
    """Keep presses taken on an unset clock inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO feedback_unplaced (boot_id, boottime, wall, sensor_id, level, rank, scale,"
        " repeated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(*r[:7], int(r.repeated)) for r in rows])


def place_unplaced_answers(conn: sqlite3.Connection, *, boot_id: str, offset: float,
                           shifts: dict[str, float], now: float) -> tuple[int, set[str]]:
    """Move the presses of ``feedback_unplaced`` into ``feedback`` inside the caller's
    transaction: this boot's at ``offset + boottime``, earlier boots' at their stamped wall
    time plus ``shifts[boot]`` (the pulses' estimate; 0 when that boot has none).  Returns
    (presses placed, the terminals with presses placed by estimate)."""
    rows = [UnplacedAnswer(*r) for r in conn.execute(
        "SELECT boot_id, boottime, wall, sensor_id, level, rank, scale, repeated"
        " FROM feedback_unplaced")]
    tallies: dict[AnswerKey, list[int]] = {}
    events = []
    estimated: set[str] = set()
    for r in rows:
        if r.boot_id == boot_id:
            ts = offset + r.boottime
        else:
            ts = r.wall + shifts.get(r.boot_id, 0.0)
            estimated.add(r.sensor_id)
        t = tallies.setdefault(AnswerKey(r.sensor_id, bucket_start(ts), r.level, r.rank,
                                         r.scale), [0, 0])
        t[1 if r.repeated else 0] += 1
        events.append(AnswerEvent(ts, r.sensor_id, r.level, r.rank, r.scale, bool(r.repeated)))
    add_feedback(conn, tallies, now)
    insert_feedback_events(conn, events)
    conn.execute("DELETE FROM feedback_unplaced")
    return len(rows), estimated


class FeedbackMixin:
    """Reads of :class:`kiosk.store.Store` on the feedback tables (empty before m007)."""

    conn: sqlite3.Connection

    @property
    def has_feedback(self) -> bool:
        """True once the database has the feedback tables (m007 applied)."""
        return FEEDBACK_MIGRATION not in self.pending_migrations  # type: ignore[attr-defined]

    def feedback_rows(self, since: float, until: float,
                      sensor_ids: Sequence[str] | None = None) -> list[FeedbackRow]:
        """Per terminal and level, answers and repeated presses summed over the buckets
        starting in [since, until), sorted by terminal and rank."""
        if not self.has_feedback:
            return []
        sql = ("SELECT sensor_id, level, min(rank), max(scale), sum(answers), sum(repeated)"
               " FROM feedback WHERE start >= ? AND start < ?")
        params: list[object] = [since, until]
        if sensor_ids:
            sql += f" AND sensor_id IN ({', '.join('?' * len(sensor_ids))})"
            params += list(sensor_ids)
        rows = self.conn.execute(sql + " GROUP BY sensor_id, level ORDER BY sensor_id, 3",
                                 params).fetchall()
        return [FeedbackRow(s, lv, int(rk), int(sc), int(a), int(r))
                for s, lv, rk, sc, a, r in rows]

    def feedback_buckets(self, since: float, until: float, sensor_ids: Sequence[str] | None = None
                         ) -> list[tuple[AnswerKey, AnswerTally]]:
        """Every bucket row starting in [since, until), sorted by terminal, start and rank."""
        if not self.has_feedback:
            return []
        sql = ("SELECT sensor_id, start, level, rank, scale, answers, repeated FROM feedback"
               " WHERE start >= ? AND start < ?")
        params: list[object] = [since, until]
        if sensor_ids:
            sql += f" AND sensor_id IN ({', '.join('?' * len(sensor_ids))})"
            params += list(sensor_ids)
        return [(AnswerKey(s, int(b), lv, int(rk), int(sc)), AnswerTally(int(a), int(r)))
                for s, b, lv, rk, sc, a, r in self.conn.execute(
                    sql + " ORDER BY sensor_id, start, rank", params)]

    def feedback_terminal_ids(self) -> list[str]:
        """The feedback terminals with stored answers or state, sorted."""
        rows = self.conn.execute(
            "SELECT sensor_id FROM sensors WHERE kind IN ('feedback', 'feedback-simulated')"
            + (" UNION SELECT DISTINCT sensor_id FROM feedback" if self.has_feedback else "")
            + " ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def feedback_events(self, since: float, until: float) -> list[AnswerEvent]:
        """The raw presses with ``ts`` in [since, until), in time order."""
        if not self.has_feedback:
            return []
        return [AnswerEvent(ts, s, lv, rk, sc, bool(r)) for ts, s, lv, rk, sc, r in
                self.conn.execute(
                    "SELECT ts, sensor_id, level, rank, scale, repeated FROM feedback_events"
                    " WHERE ts >= ? AND ts < ? ORDER BY ts", (since, until))]

    def unplaced_answers(self) -> int:
        """Presses waiting for the clock to be set."""
        if not self.has_feedback:
            return 0
        return int(self.conn.execute("SELECT count(*) FROM feedback_unplaced").fetchone()[0])
