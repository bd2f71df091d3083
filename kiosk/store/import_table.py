"""The rows of a file ``kiosk import`` reads, held in TEMP tables of the store's connection
(SQLite's temp file, ``PRAGMA temp_store = FILE``), so a file of any size is checked and
written in little memory: the checks against the file's other rows and against the
database are SQL over these tables and the indexes of ``counts`` and ``import_rows``.

Times are UTC seconds.  The caller loads the rows (:meth:`ImportTable.add`, outside any
transaction of the main database), then classifies and writes them inside one
transaction (:meth:`classify`, :meth:`write`), and finally :meth:`close` drops the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import Any, NamedTuple


class Fate(IntEnum):
    """What the import does with a row of the file (>= PERIOD: a problem)."""

    NEW = 1        #: written
    UNCHANGED = 2  #: equal to an imported row already there
    REPLACING = 3  #: written, replacing the imported rows it overlaps (--replace)
    PERIOD = 4     #: does not fit one upload period (--upload)
    COUNTED = 5    #: overlaps what this kiosk counted, or a time it was running
    CONFLICT = 6   #: overlaps an imported row with other values (no --replace)


class FileStats(NamedTuple):
    """Rows of the file, their extent [first_start, last_end) and the visitors (in) the
    import writes."""

    rows: int
    first_start: int | None
    last_end: int | None
    new: int
    unchanged: int
    replaced: int
    visitors: int
    replaced_start: int | None
    replaced_end: int | None


class ImportTable:
    """TEMP tables ``imp_rows`` (the file's good rows by line), ``imp_sensors``,
    ``imp_runs`` (the daemon's running intervals, merged) and ``imp_replaced``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute("PRAGMA temp_store = FILE")
        self._drop()
        for sql in (
            "CREATE TEMP TABLE imp_rows (line INTEGER PRIMARY KEY, sensor_id TEXT NOT NULL,"
            " start INTEGER NOT NULL, end INTEGER NOT NULL, in_count INTEGER NOT NULL,"
            " out_count INTEGER NOT NULL, fate INTEGER, hits INTEGER, hit_start INTEGER)",
            "CREATE TEMP TABLE imp_sensors (sensor_id TEXT PRIMARY KEY, since INTEGER,"
            " known INTEGER) WITHOUT ROWID",
            "CREATE TEMP TABLE imp_runs (a REAL PRIMARY KEY, b REAL NOT NULL) WITHOUT ROWID",
            "CREATE TEMP TABLE imp_replaced (sensor_id TEXT NOT NULL, start INTEGER NOT NULL,"
            " end INTEGER NOT NULL, import_id INTEGER NOT NULL, PRIMARY KEY (sensor_id, start))"
            " WITHOUT ROWID",
        ):
            conn.execute(sql)

    def _drop(self) -> None:
        for t in ("imp_rows", "imp_sensors", "imp_runs", "imp_replaced"):
            self.conn.execute(f"DROP TABLE IF EXISTS temp.{t}")

    def close(self) -> None:
        """Drop the tables (after the caller's transaction ended); idempotent."""
        if self.conn.in_transaction:
            self.conn.rollback()
        self._drop()

    def __enter__(self) -> ImportTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loading --------------------------------------------------------------------------------

    def add(self, rows: Sequence[tuple[int, str, int, int, int, int]]) -> None:
        """Store (line, sensor_id, start, end, in, out) rows (a temp-only transaction)."""
        self.conn.executemany("INSERT INTO temp.imp_rows (line, sensor_id, start, end, in_count,"
                              " out_count) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def loaded(self) -> None:
        """Index the rows and end the loading transaction."""
        self.conn.execute("CREATE INDEX temp.imp_rows_order ON imp_rows (sensor_id, start, line)")
        self.conn.execute("CREATE INDEX temp.imp_rows_end ON imp_rows (sensor_id, end)")
        self.conn.execute("INSERT INTO temp.imp_sensors (sensor_id)"
                          " SELECT DISTINCT sensor_id FROM temp.imp_rows")
        self.conn.commit()

    # -- the file on its own ----------------------------------------------------------------------

    def overlaps(self, limit: int) -> tuple[int, list[tuple[int, str, int, int, int, int, int]]]:
        """(how many rows overlap an earlier row of the same sensor, the first ``limit`` of
        them by line as (line, sensor_id, start, end, earlier line, its start, its end)).
        Rows are taken by start (then line); a row's earlier row is the one of the
        greatest end so far."""
        base = ("SELECT line, sensor_id, start, end, prev_end FROM (SELECT line, sensor_id, start,"
                " end, max(end) OVER (PARTITION BY sensor_id ORDER BY start, line ROWS BETWEEN"
                " UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end FROM temp.imp_rows)"
                " WHERE start < prev_end")
        n = self.conn.execute(f"SELECT count(*) FROM ({base})").fetchone()[0]
        out = []
        if n:
            for line, sid, a, b, prev_end in self.conn.execute(f"{base} ORDER BY line LIMIT ?",
                                                               (limit,)).fetchall():
                pl, pa, pb = self.conn.execute(
                    "SELECT line, start, end FROM temp.imp_rows WHERE sensor_id = ? AND end = ?"
                    " ORDER BY start, line LIMIT 1", (sid, prev_end)).fetchone()
                out.append((line, sid, a, b, pl, pa, pb))
        return n, out

    # -- against the database (inside the caller's transaction) ---------------------------------

    def sensors(self) -> list[str]:
        """The file's sensor ids, sorted."""
        return [s for (s,) in self.conn.execute("SELECT sensor_id FROM temp.imp_sensors"
                                                " ORDER BY sensor_id")]

    def unknown_sensors(self, known: Iterable[str], limit: int) -> tuple[int, list[tuple[str, int, int]]]:
        """(how many of the file's sensors are not in ``known``, the first ``limit`` of
        them by sensor id as (sensor_id, first line, rows))."""
        self.conn.execute("UPDATE temp.imp_sensors SET known = NULL")
        self.conn.executemany("UPDATE temp.imp_sensors SET known = 1 WHERE sensor_id = ?",
                              [(s,) for s in known])
        n = self.conn.execute("SELECT count(*) FROM temp.imp_sensors WHERE known IS NULL"
                              ).fetchone()[0]
        out = []
        for (sid,) in self.conn.execute("SELECT sensor_id FROM temp.imp_sensors WHERE known IS"
                                        " NULL ORDER BY sensor_id LIMIT ?", (limit,)).fetchall():
            first, rows = self.conn.execute("SELECT min(line), count(*) FROM temp.imp_rows"
                                            " WHERE sensor_id = ?", (sid,)).fetchone()
            out.append((sid, first, rows))
        return n, out

    def classify(self, runs: Iterable[tuple[float, float]], *, upload_period_s: int | None,
                 upload: bool, replace_imported: bool) -> None:
        """Set each row's :class:`Fate` (first that applies: PERIOD, COUNTED, then from
        the imported rows it overlaps).  ``runs``: (start, end) of the daemon's running
        intervals, sorted by start."""
        c = self.conn
        c.execute("UPDATE temp.imp_rows SET fate = NULL, hits = NULL, hit_start = NULL")
        c.execute("DELETE FROM temp.imp_replaced")
        c.execute("DELETE FROM temp.imp_runs")
        c.executemany("INSERT INTO temp.imp_runs (a, b) VALUES (?, ?)", _merged(runs))
        c.execute("UPDATE temp.imp_sensors SET since = (SELECT min(start) FROM main.counts k"
                  " WHERE k.sensor_id = imp_sensors.sensor_id AND k.import_id IS NULL)")
        if upload_period_s:
            c.execute("UPDATE temp.imp_rows SET fate = ? WHERE start / ? != (end - 1) / ?",
                      (Fate.PERIOD, upload_period_s, upload_period_s))
        c.execute(
            "UPDATE temp.imp_rows SET fate = ? WHERE fate IS NULL AND ("
            " EXISTS (SELECT 1 FROM main.counts k WHERE k.sensor_id = imp_rows.sensor_id"
            "  AND k.start >= imp_rows.start AND k.start < imp_rows.end AND k.import_id IS NULL)"
            " OR ((SELECT since FROM temp.imp_sensors s WHERE s.sensor_id = imp_rows.sensor_id)"
            "  < imp_rows.end AND (SELECT b FROM temp.imp_runs WHERE a < imp_rows.end"
            "  ORDER BY a DESC LIMIT 1) > imp_rows.start))", (Fate.COUNTED,))
        # The imported rows a row overlaps: those starting within it, and the one before it
        # if it reaches into it (imported rows of a sensor never overlap each other).
        c.execute(
            "UPDATE temp.imp_rows SET hit_start = (SELECT CASE WHEN h.end > imp_rows.start"
            " THEN h.start END FROM main.import_rows h WHERE h.sensor_id = imp_rows.sensor_id"
            " AND h.start < imp_rows.start ORDER BY h.start DESC LIMIT 1) WHERE fate IS NULL")
        c.execute(
            "UPDATE temp.imp_rows SET hits = (hit_start IS NOT NULL) + (SELECT count(*) FROM"
            " main.import_rows h WHERE h.sensor_id = imp_rows.sensor_id AND h.start >="
            " imp_rows.start AND h.start < imp_rows.end), hit_start = coalesce(hit_start,"
            " (SELECT min(h.start) FROM main.import_rows h WHERE h.sensor_id = imp_rows.sensor_id"
            " AND h.start >= imp_rows.start AND h.start < imp_rows.end)) WHERE fate IS NULL")
        c.execute("UPDATE temp.imp_rows SET fate = ? WHERE fate IS NULL AND hits = 0", (Fate.NEW,))
        c.execute(
            "UPDATE temp.imp_rows SET fate = ? WHERE fate IS NULL AND hits = 1 AND hit_start = start"
            " AND EXISTS (SELECT 1 FROM main.import_rows h JOIN main.imports i ON i.id = h.import_id"
            " JOIN main.counts k ON k.sensor_id = h.sensor_id AND k.start = h.start"
            " WHERE h.sensor_id = imp_rows.sensor_id AND h.start = imp_rows.start"
            " AND h.end = imp_rows.end AND k.in_count = imp_rows.in_count"
            " AND k.out_count = imp_rows.out_count AND i.upload = ?)",
            (Fate.UNCHANGED, int(upload)))
        if not replace_imported:
            c.execute("UPDATE temp.imp_rows SET fate = ? WHERE fate IS NULL", (Fate.CONFLICT,))
            return
        c.execute("UPDATE temp.imp_rows SET fate = ? WHERE fate IS NULL", (Fate.REPLACING,))
        keep = (" AND NOT EXISTS (SELECT 1 FROM temp.imp_rows u WHERE u.fate = ?"
                " AND u.sensor_id = h.sensor_id AND u.start = h.start)")
        for on in ("h.start >= r.start AND h.start < r.end", "h.start = r.hit_start"):
            c.execute("INSERT OR IGNORE INTO temp.imp_replaced (sensor_id, start, end, import_id)"
                      " SELECT h.sensor_id, h.start, h.end, h.import_id FROM temp.imp_rows r"
                      f" JOIN main.import_rows h ON h.sensor_id = r.sensor_id AND {on}"
                      f" WHERE r.fate = ?{keep}", (Fate.REPLACING, Fate.UNCHANGED))

    def refused(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(how many rows :meth:`classify` refused, the first ``limit`` by line as dicts:
        line, sensor_id, start, end, fate, since (the sensor's first counted bucket), and
        for a CONFLICT the first imported row it overlaps: h_start, h_end, h_import,
        h_in, h_out, h_upload)."""
        n = self.conn.execute("SELECT count(*) FROM temp.imp_rows WHERE fate >= ?",
                              (Fate.PERIOD,)).fetchone()[0]
        cur = self.conn.execute(
            "SELECT r.line, r.sensor_id, r.start, r.end, r.in_count, r.out_count, r.fate, s.since,"
            " h.start AS h_start, h.end AS h_end, h.import_id AS h_import, k.in_count AS h_in,"
            " k.out_count AS h_out, i.upload AS h_upload FROM temp.imp_rows r"
            " JOIN temp.imp_sensors s ON s.sensor_id = r.sensor_id"
            " LEFT JOIN main.import_rows h ON r.fate = ? AND h.sensor_id = r.sensor_id"
            "  AND h.start = r.hit_start"
            " LEFT JOIN main.imports i ON i.id = h.import_id"
            " LEFT JOIN main.counts k ON k.sensor_id = h.sensor_id AND k.start = h.start"
            " WHERE r.fate >= ? ORDER BY r.line LIMIT ?", (Fate.CONFLICT, Fate.PERIOD, limit))
        names = [d[0] for d in cur.description]
        return n, [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def stats(self) -> FileStats:
        """The figures of the summary (after :meth:`classify`)."""
        rows, lo, hi, new, unchanged, visitors = self.conn.execute(
            "SELECT count(*), min(start), max(end), coalesce(sum(fate IN (?, ?)), 0),"
            " coalesce(sum(fate = ?), 0), coalesce(sum(CASE WHEN fate IN (?, ?) THEN in_count"
            " END), 0) FROM temp.imp_rows",
            (Fate.NEW, Fate.REPLACING, Fate.UNCHANGED, Fate.NEW, Fate.REPLACING)).fetchone()
        replaced, ra, rb = self.conn.execute(
            "SELECT count(*), min(start), max(end) FROM temp.imp_replaced").fetchone()
        return FileStats(rows, lo, hi, new, unchanged, replaced, visitors, ra, rb)

    def write(self, import_id: int, now: float) -> None:
        """Drop the replaced imported rows and write the NEW and REPLACING rows: counts in
        the bucket at their start with ``import_id``, and their extent in ``import_rows``."""
        c = self.conn
        c.execute("DELETE FROM main.counts WHERE import_id IS NOT NULL AND (sensor_id, start) IN"
                  " (SELECT sensor_id, start FROM temp.imp_replaced)")
        c.execute("DELETE FROM main.import_rows WHERE (sensor_id, start) IN"
                  " (SELECT sensor_id, start FROM temp.imp_replaced)")
        fates = (Fate.NEW, Fate.REPLACING)
        c.execute("INSERT INTO main.counts (sensor_id, start, in_count, out_count, updated_at,"
                  " import_id) SELECT sensor_id, start, in_count, out_count, ?, ?"
                  " FROM temp.imp_rows WHERE fate IN (?, ?) ORDER BY sensor_id, start",
                  (now, import_id, *fates))
        c.execute("INSERT INTO main.import_rows (sensor_id, start, end, import_id)"
                  " SELECT sensor_id, start, end, ? FROM temp.imp_rows WHERE fate IN (?, ?)"
                  " ORDER BY sensor_id, start", (import_id, *fates))


def _merged(runs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted intervals joined where they overlap or touch (disjoint, increasing)."""
    out: list[list[float]] = []
    for a, b in sorted(runs):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]
