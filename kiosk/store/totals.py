"""The ``serial_totals`` table: the last running totals of each cumulative serial sensor.

The daemon's writer stores a sensor's :class:`~kiosk.events.TotalsState` in the same
transaction as the counts derived from the same reading (:meth:`CountsMixin.write_batch`),
so after ``kill -9`` at any moment the stored totals and the stored counts agree: the next
start resumes from them and neither counts a reading twice nor loses what the device
counted meanwhile.  One row per sensor; ``updated_at`` and ``ts`` are UTC seconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from kiosk.events import ChannelState, TotalsState


def write_totals(conn: sqlite3.Connection, states: Iterable[TotalsState], now: float) -> None:
    """Upsert the latest totals of each sensor inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO serial_totals (sensor_id, port, in_last, in_suspect, in_suspect_offline,"
        " out_last, out_suspect, out_suspect_offline, ts, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sensor_id) DO UPDATE SET"
        " port = excluded.port, in_last = excluded.in_last, in_suspect = excluded.in_suspect,"
        " in_suspect_offline = excluded.in_suspect_offline, out_last = excluded.out_last,"
        " out_suspect = excluded.out_suspect, out_suspect_offline = excluded.out_suspect_offline,"
        " ts = excluded.ts, updated_at = excluded.updated_at",
        [(s.sensor_id, s.port, *_row(s.totals_in), *_row(s.totals_out), s.ts, now)
         for s in states],
    )


def delete_totals(conn: sqlite3.Connection, sensor_ids: Iterable[str]) -> None:
    """Forget the totals of sensors that no longer read running totals (caller's transaction)."""
    conn.executemany("DELETE FROM serial_totals WHERE sensor_id = ?", [(s,) for s in sensor_ids])


def _row(c: ChannelState) -> tuple[int | None, int | None, int]:
    return c.last, c.suspect, int(c.suspect_offline)


class TotalsMixin:
    """``serial_totals`` operations of :class:`kiosk.store.Store`."""

    conn: sqlite3.Connection

    def serial_totals(self) -> dict[str, TotalsState]:
        """The stored totals per sensor id (empty before the first cumulative reading)."""
        rows = self.conn.execute(
            "SELECT sensor_id, ts, port, in_last, in_suspect, in_suspect_offline, out_last,"
            " out_suspect, out_suspect_offline FROM serial_totals").fetchall()
        return {
            r[0]: TotalsState(r[0], r[1], r[2], ChannelState(r[3], r[4], bool(r[5])),
                              ChannelState(r[6], r[7], bool(r[8])))
            for r in rows
        }
