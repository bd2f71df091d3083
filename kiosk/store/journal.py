"""The ``journal`` table: what happened (starts, stops, faults, uploads, imports, marks).

Everyone writes it (the daemon's writer, the uploader, ``kiosk import``, ``kiosk
annotate``), always through :func:`insert_journal` inside their own short write
transaction.  Times are UTC seconds since the epoch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of the local journal (``level`` is a logging level name, ``ts`` UTC s)."""

    ts: float
    level: str
    kind: str
    message: str
    sensor_id: str | None = None


def insert_journal(conn: sqlite3.Connection, entries: Iterable[JournalEntry]) -> None:
    """Append journal entries inside the caller's write transaction (the only journal
    INSERT of the package)."""
    conn.executemany(
        "INSERT INTO journal (ts, level, kind, sensor_id, message) VALUES (?, ?, ?, ?, ?)",
        [(e.ts, e.level, e.kind, e.sensor_id, e.message) for e in entries],
    )


class JournalMixin:
    """Journal operations of :class:`kiosk.store.Store`."""

    conn: sqlite3.Connection

    def add_journal(self, *entries: JournalEntry) -> None:
        """Append journal entries in their own transaction."""
        with self.write() as conn:  # type: ignore[attr-defined]
            insert_journal(conn, entries)

    def journal(self, *, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` entries from ``since`` (UTC s), oldest first, as dicts."""
        cur = self.conn.execute(
            "SELECT ts, level, kind, sensor_id, message FROM journal WHERE ts >= ?"
            " ORDER BY ts DESC, id DESC LIMIT ?",
            (since if since is not None else 0, limit),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in reversed(cur.fetchall())]

    def journal_messages(self) -> list[str]:
        """Every journal message, in insertion order (for tests and diagnostics)."""
        return [r[0] for r in self.conn.execute("SELECT message FROM journal ORDER BY id")]

    def query_journal(self, *, since: float, until: float | None = None,
                      levels: Sequence[str] = (), sensors: Sequence[str] = (),
                      kinds: Sequence[str] = (), limit: int | None = 500
                      ) -> tuple[list[dict[str, Any]], int]:
        """Entries with ``since <= ts < until`` (UTC s) matching the filters, oldest first.

        ``levels``: upper-case level names to keep (empty: all).  At most ``limit`` (the
        newest; None or 0: all).  Returns (entries with their id, how many matched in all).
        """
        where = ["ts >= ?"]
        params: list[Any] = [since]
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        if levels:
            where.append(f"upper(level) IN ({', '.join('?' * len(levels))})")
            params += list(levels)
        if sensors:
            where.append(f"sensor_id IN ({', '.join('?' * len(sensors))})")
            params += list(sensors)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params += list(kinds)
        cond = " AND ".join(where)
        total = self.conn.execute(f"SELECT count(*) FROM journal WHERE {cond}",
                                  params).fetchone()[0]
        sql = (f"SELECT id, ts, level, kind, sensor_id, message FROM journal WHERE {cond}"
               " ORDER BY ts DESC, id DESC")
        if limit:
            sql += f" LIMIT {int(limit)}"
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        rows.reverse()
        return rows, int(total)
