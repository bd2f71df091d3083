"""The daemon's tables: ``counts``, ``events``, ``runs``, ``sensors`` and ``meta``.

The daemon's writer writes them (one flush, one transaction); ``kiosk import`` adds
``counts`` rows with ``import_id`` set (see :mod:`kiosk.store.staff`).  All times are
UTC seconds since the epoch; bucket starts are multiples of 900.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from kiosk.events import TotalsState
from kiosk.exc import DiskFullError
from kiosk.store.feedback import (
    AnswerEvent,
    AnswerKey,
    UnplacedAnswer,
    add_feedback,
    insert_feedback_events,
    insert_unplaced_answers,
)
from kiosk.store.journal import JournalEntry, insert_journal
from kiosk.store.placement import UnplacedPulse, insert_unplaced
from kiosk.store.totals import delete_totals, write_totals


@dataclass
class SensorRow:
    """The latest state of one sensor (times UTC s), as the writer stores it."""

    sensor_id: str
    kind: str
    state: str
    state_since: float | None = None
    last_pulse: float | None = None
    rejected_lines: int = 0
    message: str | None = None


class RunRow(NamedTuple):
    """One interval the daemon was running (UTC s; ``stopped_at`` None: running or crashed)."""

    started_at: float
    last_seen: float
    stopped_at: float | None
    stop_reason: str | None


def write_meta(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Store JSON-able ``values`` under their keys inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
        " DO UPDATE SET value = excluded.value",
        [(k, json.dumps(v)) for k, v in values.items()],
    )


def write_sensors(conn: sqlite3.Connection, rows: Iterable[SensorRow], now: float) -> None:
    """Upsert sensor states inside the caller's transaction (``now``: UTC s)."""
    conn.executemany(
        "INSERT INTO sensors (sensor_id, kind, state, state_since, last_pulse, rejected_lines,"
        " message, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (sensor_id) DO UPDATE SET kind = excluded.kind, state = excluded.state,"
        " state_since = excluded.state_since,"
        " last_pulse = coalesce(excluded.last_pulse, last_pulse),"
        " rejected_lines = excluded.rejected_lines, message = excluded.message,"
        " updated_at = excluded.updated_at",
        [(r.sensor_id, r.kind, r.state, r.state_since, r.last_pulse, r.rejected_lines,
          r.message, now) for r in rows],
    )


class CountsMixin:
    """Operations of :class:`kiosk.store.Store` on counts, events, runs, sensors and meta."""

    conn: sqlite3.Connection

    # -- the writer's operations -----------------------------------------------------------

    def write_batch(
        self,
        *,
        now: float,
        counts: dict[tuple[str, int], list[int]],
        events: Sequence[tuple[float, str, str, int]] = (),
        sensors: Iterable[SensorRow] = (),
        journal: Iterable[JournalEntry] = (),
        run_id: int | None = None,
        meta: dict[str, Any] | None = None,
        unplaced: Sequence[UnplacedPulse] = (),
        changed_at: float | None = None,
        totals: Iterable[TotalsState] = (),
        forget_totals: Iterable[str] = (),
        feedback: dict[AnswerKey, list[int]] | None = None,
        feedback_events: Sequence[AnswerEvent] = (),
        unplaced_answers: Sequence[UnplacedAnswer] = (),
    ) -> None:
        """Write one flush in a single transaction.

        ``counts`` maps (sensor_id, bucket start) to [in, out] to add; the increment is an
        UPSERT with ``count = count + excluded.count``, stamped ``updated_at = changed_at``
        (default ``now``; the writer passes a time that never goes back, so a clock stepped
        back cannot hide a change from the uploader's scan).  ``events`` are (ts, sensor_id,
        direction, count) rows.  ``run_id``'s ``last_seen`` is moved to ``now``; ``meta``
        values (JSON-able) are stored under their keys.  ``unplaced``: pulses counted before
        the clock was set (:mod:`kiosk.store.placement`).  ``totals`` are the serial sensors'
        running totals after the readings these counts came from (same transaction: a crash
        keeps both or neither); ``forget_totals`` are sensor ids whose totals are dropped.
        ``feedback``: [answers, repeated] to add per bucket key of a feedback terminal,
        ``feedback_events`` its raw presses and ``unplaced_answers`` presses taken on an unset
        clock (:mod:`kiosk.store.feedback`), all in the same transaction as the counts.

        When the disk is full, the reserve (:mod:`kiosk.store.reserve`) is released and the
        flush tried once more, so that the counts in hand still reach the disk.
        """
        args = (now, counts, events, list(sensors), list(journal), run_id, meta,  # retry-safe
                unplaced, now if changed_at is None else changed_at, list(totals),
                list(forget_totals), feedback or {}, feedback_events, unplaced_answers)
        try:
            self._write_batch(*args)
        except DiskFullError:
            if not self.release_reserve():  # type: ignore[attr-defined]
                raise
            self._write_batch(*args)

    def _write_batch(self, now: float, counts: dict[tuple[str, int], list[int]],
                     events: Sequence[tuple[float, str, str, int]], sensors: Iterable[SensorRow],
                     journal: Iterable[JournalEntry], run_id: int | None,
                     meta: dict[str, Any] | None, unplaced: Sequence[UnplacedPulse],
                     changed_at: float, totals: Iterable[TotalsState],
                     forget_totals: Iterable[str], feedback: dict[AnswerKey, list[int]],
                     feedback_events: Sequence[AnswerEvent],
                     unplaced_answers: Sequence[UnplacedAnswer]) -> None:
        with self.write() as conn:  # type: ignore[attr-defined]
            if counts:
                conn.executemany(
                    "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sensor_id, start) DO UPDATE SET"
                    " in_count = in_count + excluded.in_count,"
                    " out_count = out_count + excluded.out_count,"
                    " updated_at = excluded.updated_at",
                    [(s, b, c[0], c[1], changed_at) for (s, b), c in counts.items()],
                )
            if events:
                conn.executemany(
                    "INSERT INTO events (ts, sensor_id, direction, count) VALUES (?, ?, ?, ?)",
                    events,
                )
            if unplaced:
                insert_unplaced(conn, unplaced)
            write_sensors(conn, sensors, now)
            insert_journal(conn, journal)
            if run_id is not None:
                conn.execute("UPDATE runs SET last_seen = max(last_seen, ?)"
                             " WHERE id = ? AND stopped_at IS NULL", (now, run_id))
            if meta:
                write_meta(conn, meta)
            delete_totals(conn, forget_totals)
            write_totals(conn, totals, now)
            if feedback:
                add_feedback(conn, feedback, changed_at)
            if feedback_events:
                insert_feedback_events(conn, feedback_events)
            if unplaced_answers:
                insert_unplaced_answers(conn, unplaced_answers)

    def start_run(self, *, now: float, pid: int, version: str, boot_id: str | None = None,
                  clock_offset: float | None = None) -> int:
        """Record that the daemon started counting at ``now``; returns the run id.

        ``clock_offset`` (wall - boot time, s) marks a run started on a wall clock that is not
        set yet: it is moved into place when the clock is set (:mod:`kiosk.store.placement`).
        """
        with self.write() as conn:  # type: ignore[attr-defined]
            cur = conn.execute(
                "INSERT INTO runs (started_at, last_seen, pid, version, boot_id, clock_offset)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now, now, pid, version, boot_id, clock_offset),
            )
            return int(cur.lastrowid)

    def latest_change(self) -> float:
        """The newest ``updated_at`` of any count (UTC s; 0 when there is none)."""
        return float(self.conn.execute("SELECT coalesce(max(updated_at), 0) FROM counts")
                     .fetchone()[0])

    def end_run(self, run_id: int, *, now: float, reason: str) -> None:
        """Record that run ``run_id`` stopped counting at ``now`` for ``reason``."""
        with self.write() as conn:  # type: ignore[attr-defined]
            conn.execute(
                "UPDATE runs SET last_seen = max(last_seen, ?), stopped_at = max(last_seen, ?),"
                " stop_reason = ? WHERE id = ?",
                (now, now, reason, run_id),
            )

    def set_meta(self, **values: Any) -> None:
        """Store JSON-able ``values`` under their keys, in their own transaction."""
        with self.write() as conn:  # type: ignore[attr-defined]
            write_meta(conn, values)

    def prune(self, *, now: float, event_retention_days: int, journal_retention_days: int) -> int:
        """Delete raw events (pulses and presses) and journal lines past retention; returns rows deleted.

        Counts, runs and upload records are never pruned: they are the product.
        """
        with self.write() as conn:  # type: ignore[attr-defined]
            n = conn.execute("DELETE FROM events WHERE ts < ?",
                             (now - event_retention_days * 86400,)).rowcount
            n += conn.execute("DELETE FROM journal WHERE ts < ?",
                              (now - journal_retention_days * 86400,)).rowcount
            if self.has_feedback:  # type: ignore[attr-defined]
                n += conn.execute("DELETE FROM feedback_events WHERE ts < ?",
                                  (now - event_retention_days * 86400,)).rowcount
        self.ensure_reserve()  # type: ignore[attr-defined]  # again, once there is room
        return n

    # -- reads ------------------------------------------------------------------------------

    def meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def buckets(
        self, since: float, until: float, sensor_ids: Sequence[str] | None = None
    ) -> list[tuple[str, int, int, int]]:
        """(sensor_id, start, in, out) of buckets starting in [since, until), sorted."""
        sql = "SELECT sensor_id, start, in_count, out_count FROM counts WHERE start >= ? AND start < ?"
        params: list[Any] = [since, until]
        if sensor_ids:
            sql += f" AND sensor_id IN ({', '.join('?' * len(sensor_ids))})"
            params += list(sensor_ids)
        return self.conn.execute(sql + " ORDER BY sensor_id, start", params).fetchall()

    def runs(self, since: float, until: float) -> list[tuple[float, float]]:
        """(start, end) of the running intervals that overlap [since, until), sorted."""
        rows = self.conn.execute(
            "SELECT started_at, coalesce(stopped_at, last_seen) FROM runs"
            " WHERE started_at < ? AND coalesce(stopped_at, last_seen) > ? ORDER BY started_at",
            (until, since),
        ).fetchall()
        return [(float(a), float(b)) for a, b in rows]

    def last_run(self) -> RunRow | None:
        """The most recent run, or None before the daemon first ran."""
        row = self.conn.execute(
            "SELECT started_at, last_seen, stopped_at, stop_reason FROM runs"
            " ORDER BY id DESC LIMIT 1").fetchone()
        return RunRow(*row) if row else None

    def run_last_seen(self, run_id: int, *, open_only: bool = False) -> float | None:
        """``last_seen`` (UTC s) of run ``run_id`` (``open_only``: only if not stopped)."""
        sql = "SELECT last_seen FROM runs WHERE id = ?"
        if open_only:
            sql += " AND stopped_at IS NULL"
        row = self.conn.execute(sql, (run_id,)).fetchone()
        return row[0] if row else None

    def latest_last_seen(self) -> float | None:
        """The last moment (UTC s) any run was seen counting, or None."""
        return self.conn.execute("SELECT max(last_seen) FROM runs").fetchone()[0]

    def run_bounds(self) -> tuple[float | None, float | None]:
        """(first start, last stop) of the runs, UTC s (None when there is none)."""
        return self.conn.execute("SELECT min(started_at), max(stopped_at) FROM runs").fetchone()

    def first_activity(self) -> float | None:
        """The earliest moment (UTC s) with a run or a count bucket, or None."""
        first = self.conn.execute("SELECT min(started_at) FROM runs").fetchone()[0]
        lowest = self.conn.execute("SELECT min(start) FROM counts").fetchone()[0]
        candidates = [x for x in (first, lowest) if x is not None]
        return min(candidates) if candidates else None

    def changed_periods(self, period_s: int, *, since: float, before: float) -> list[int]:
        """Starts (UTC s, multiples of ``period_s`` seconds) of periods before ``before``
        whose counts or answers (feedback terminals) changed after ``since``."""
        sql = "SELECT DISTINCT (start / ?) * ? FROM counts WHERE updated_at > ? AND start < ?"
        params = [period_s, period_s, since, before]
        if self.has_feedback:  # type: ignore[attr-defined]
            sql += (" UNION SELECT DISTINCT (start / ?) * ? FROM feedback"
                    " WHERE updated_at > ? AND start < ?")
            params += params
        rows = self.conn.execute(sql, params).fetchall()
        return [r[0] for r in rows]

    def sensor_rows(self) -> list[dict[str, Any]]:
        """Every row of ``sensors`` as a dict, by sensor id."""
        cur = self.conn.execute("SELECT * FROM sensors ORDER BY sensor_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def sensor_ids(self) -> list[str]:
        """Every visit sensor id with counts or state, sorted (feedback terminals, which count
        answers rather than visits, are not among them: see ``feedback_terminal_ids``).

        The ids in ``counts`` are found by skipping along its primary key (one lookup per
        sensor), not by reading every bucket: a year of 4 sensors is 140,000 rows."""
        rows = self.conn.execute(
            "WITH RECURSIVE ids(id) AS ("
            " SELECT (SELECT min(sensor_id) FROM counts)"
            " UNION ALL SELECT (SELECT min(sensor_id) FROM counts WHERE sensor_id > ids.id)"
            " FROM ids WHERE ids.id IS NOT NULL)"
            " SELECT sensor_id FROM sensors WHERE kind NOT IN ('feedback', 'feedback-simulated')"
            " UNION SELECT id FROM ids WHERE id IS NOT NULL ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def totals_between(self, since: float, until: float) -> dict[str, tuple[int, int]]:
        """Per sensor (in, out) summed over buckets starting in [since, until) (read per
        sensor along the primary key, not by scanning every bucket)."""
        ids = self.sensor_ids()
        if not ids:
            return {}
        rows = self.conn.execute(
            "SELECT sensor_id, sum(in_count), sum(out_count) FROM counts"
            f" WHERE sensor_id IN ({', '.join('?' * len(ids))}) AND start >= ? AND start < ?"
            " GROUP BY sensor_id",
            (*ids, since, until),
        ).fetchall()
        return {s: (int(i), int(o)) for s, i, o in rows}

    # -- report sums: buckets grouped by local hour or day (``offset``: UTC offset in s) ----

    def _units_where(self, visits: str, sensors: Sequence[str]) -> tuple[str, str, list[Any]]:
        units = "in_count" if visits == "in" else "(in_count + out_count)"
        return (units, f"sensor_id IN ({', '.join('?' * len(sensors))})",
                list(sensors))

    def sums_by_local_day(self, visits: str, sensors: Sequence[str], a: int, b: int,
                          offset: int) -> Iterator[tuple[str, int, int, int, int, int]]:
        """(sensor_id, local day number, units, in, out, buckets) of buckets in [a, b).

        ``visits`` is ``in`` or ``in+out/2`` (units: in, or in + out); the local day number
        is ``(start + offset) // 86400``."""
        units, where, params = self._units_where(visits, sensors)
        yield from self.conn.execute(
            f"SELECT sensor_id, (start + ?) / 86400 AS ld, sum({units}),"
            f" sum(in_count), sum(out_count), count(*)"
            f" FROM counts WHERE {where} AND start >= ? AND start < ?"
            f" GROUP BY sensor_id, ld", [offset, *params, a, b])

    def sums_by_local_hour(self, visits: str, sensors: Sequence[str], a: int, b: int,
                           offset: int) -> Iterator[tuple[str, int, int, int]]:
        """(sensor_id, local hour number, units, buckets) of buckets in [a, b)."""
        units, where, params = self._units_where(visits, sensors)
        yield from self.conn.execute(
            f"SELECT sensor_id, (start + ?) / 3600 AS lh, sum({units}), count(*)"
            f" FROM counts WHERE {where} AND start >= ? AND start < ?"
            f" GROUP BY sensor_id, lh", [offset, *params, a, b])

    def site_sums_by_local_hour(self, visits: str, sensors: Sequence[str], a: int, b: int,
                                offset: int) -> list[tuple[int, int]]:
        """(local hour number, units of the sensors together) of buckets in [a, b)."""
        units, where, params = self._units_where(visits, sensors)
        return self.conn.execute(
            f"SELECT (start + ?) / 3600 AS lh, sum({units}) FROM counts"
            f" WHERE {where} AND start >= ? AND start < ? GROUP BY lh",
            [offset, *params, a, b]).fetchall()

    def units_by_sensor(self, visits: str, sensors: Sequence[str], a: int, b: int
                        ) -> dict[str, int]:
        """Units per sensor over the buckets in [a, b)."""
        units, where, params = self._units_where(visits, sensors)
        return {s: int(u) for s, u in self.conn.execute(
            f"SELECT sensor_id, sum({units}) FROM counts WHERE {where} AND start >= ?"
            f" AND start < ? GROUP BY sensor_id", [*params, a, b])}

    def busiest_local_hour(self, visits: str, sensors: Sequence[str], a: int, b: int,
                           offset: int) -> tuple[int, int] | None:
        """(local hour number, units) with the most units of the sensors in [a, b)."""
        units, where, params = self._units_where(visits, sensors)
        return self.conn.execute(
            f"SELECT (start + ?) / 3600 AS lh, sum({units}) AS u FROM counts"
            f" WHERE {where} AND start >= ? AND start < ? GROUP BY lh"
            f" ORDER BY u DESC, lh LIMIT 1", [offset, *params, a, b]).fetchone()
