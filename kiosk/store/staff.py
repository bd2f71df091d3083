"""Staff tables: ``annotations`` (``kiosk annotate``), ``imports`` and ``import_rows``
(``kiosk import``), and the imported rows of ``counts`` (``import_id`` set).

The functions taking ``conn`` run inside the caller's write transaction (the staff
command checks, writes and journals in one); the :class:`StaffMixin` reads tolerate a
database opened read-only before m003 (they give nothing).  Times are UTC seconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

ANNOTATION_COLUMNS = ("id", "start", "end", "sensor_id", "kind", "note", "created_at")


# -- writes, inside the caller's transaction ------------------------------------------------------

def insert_annotation(conn: sqlite3.Connection, *, start: int, end: int, sensor_id: str | None,
                      kind: str, note: str, now: float) -> int:
    """Add an annotation of [start, end); returns its id."""
    cur = conn.execute(
        "INSERT INTO annotations (start, end, sensor_id, kind, note, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)", (start, end, sensor_id, kind, note, now))
    return int(cur.lastrowid or 0)


def annotation(conn: sqlite3.Connection, annotation_id: int) -> tuple[dict[str, Any], float | None] | None:
    """(the annotation as a dict, its ``deleted_at``), or None if there is no such id."""
    row = conn.execute(f"SELECT {', '.join(ANNOTATION_COLUMNS)}, deleted_at FROM annotations"
                       " WHERE id = ?", (annotation_id,)).fetchone()
    if row is None:
        return None
    return dict(zip(ANNOTATION_COLUMNS, row[:-1], strict=True)), row[-1]


def mark_annotation_deleted(conn: sqlite3.Connection, annotation_id: int, now: float) -> None:
    """Set ``deleted_at`` (the row is kept so uploads can re-send what it flagged)."""
    conn.execute("UPDATE annotations SET deleted_at = ? WHERE id = ?", (now, annotation_id))


def insert_import(conn: sqlite3.Connection, *, file: str, sha256: str, now: float, rows: int,
                  upload: bool, first_start: int, last_end: int, sensors: Iterable[str],
                  replaced: int) -> int:
    """Record an import (its extent [first_start, last_end)); returns its id."""
    cur = conn.execute(
        "INSERT INTO imports (file, sha256, imported_at, rows, upload, first_start, last_end,"
        " sensors, replaced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (file, sha256, now, rows, int(upload), first_start, last_end, ",".join(sensors),
         replaced))
    return int(cur.lastrowid or 0)


def insert_imported_rows(conn: sqlite3.Connection, import_id: int, now: float,
                         rows: Iterable[tuple[str, int, int, int, int]]) -> None:
    """Write (sensor_id, start, end, in, out) rows: counts in the bucket at ``start``
    with ``import_id``, and the row's extent in ``import_rows``."""
    rows = list(rows)
    conn.executemany(
        "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at, import_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(s, a, i, o, now, import_id) for s, a, _b, i, o in rows])
    conn.executemany(
        "INSERT INTO import_rows (sensor_id, start, end, import_id) VALUES (?, ?, ?, ?)",
        [(s, a, b, import_id) for s, a, b, _i, _o in rows])


def import_file_and_undone(conn: sqlite3.Connection, import_id: int) -> tuple[str, float | None] | None:
    """(file, undone_at) of an import, or None if there is no such id."""
    row = conn.execute("SELECT file, undone_at FROM imports WHERE id = ?",
                       (import_id,)).fetchone()
    return (row[0], row[1]) if row else None


def undo_import_rows(conn: sqlite3.Connection, import_id: int, now: float) -> int:
    """Delete an import's counts and rows and mark it undone; returns counts deleted."""
    n = conn.execute("DELETE FROM counts WHERE import_id = ?", (import_id,)).rowcount
    conn.execute("DELETE FROM import_rows WHERE import_id = ?", (import_id,))
    conn.execute("UPDATE imports SET undone_at = ? WHERE id = ?", (now, import_id))
    return n


# -- reads ----------------------------------------------------------------------------------------

class StaffMixin:
    """Reads of :class:`kiosk.store.Store` on annotations and imports."""

    conn: sqlite3.Connection

    def annotations_overlapping(self, start: float, end: float, *,
                                sensor_id: str | None = None) -> list[dict[str, Any]]:
        """Annotations (not deleted) overlapping [start, end), by start then id; with
        ``sensor_id``, only that sensor's and the whole site's.  [] before m003."""
        sql = (f"SELECT {', '.join(ANNOTATION_COLUMNS)} FROM annotations WHERE deleted_at IS NULL"
               " AND start < ? AND end > ?")
        params: list[Any] = [end, start]
        if sensor_id is not None:
            sql += " AND (sensor_id IS NULL OR sensor_id = ?)"
            params.append(sensor_id)
        try:
            rows = self.conn.execute(sql + " ORDER BY start, id", params).fetchall()
        except sqlite3.OperationalError:  # not migrated yet (read-only connection)
            return []
        return [dict(zip(ANNOTATION_COLUMNS, r, strict=True)) for r in rows]

    def annotation_rows(self) -> list[dict[str, Any]]:
        """Every row of ``annotations`` (all columns, deleted ones too); [] without it."""
        try:
            cur = self.conn.execute("SELECT * FROM annotations")
        except sqlite3.OperationalError:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, raw, strict=True)) for raw in cur.fetchall()]

    def has_imported_counts(self, sensor_id: str, start: float, end: float, *,
                            for_upload: bool = False) -> bool:
        """True if imported counts of the sensor sit in [start, end) (``for_upload``: only
        those imported with ``--upload``)."""
        join = " JOIN imports i ON i.id = c.import_id AND i.upload = 1" if for_upload else ""
        try:
            row = self.conn.execute(
                f"SELECT 1 FROM counts c{join} WHERE c.sensor_id = ? AND c.start >= ?"
                " AND c.start < ? AND c.import_id IS NOT NULL LIMIT 1",
                (sensor_id, start, end)).fetchone()
        except sqlite3.OperationalError:
            return False
        return row is not None

    def staff_changes(self, since: float) -> list[tuple[str | None, int, int]]:
        """(sensor_id or None, start, end) of annotations added or deleted and imports
        made or undone after ``since``, unsorted; [] before m003."""
        try:
            out: list[tuple[str | None, int, int]] = [
                (s, int(a), int(b)) for s, a, b in self.conn.execute(
                    "SELECT sensor_id, start, end FROM annotations"
                    " WHERE created_at > ? OR deleted_at > ?", (since, since))]
            out += [(None, int(a), int(b)) for a, b in self.conn.execute(
                "SELECT first_start, last_end FROM imports WHERE (imported_at > ? OR undone_at > ?)"
                " AND first_start IS NOT NULL", (since, since))]
        except sqlite3.OperationalError:  # not migrated yet
            return []
        return out

    def previous_import(self, sha256: str) -> dict[str, Any] | None:
        """The latest import (not undone) of a file with this content, if any."""
        try:
            row = self.conn.execute(
                "SELECT id, file, imported_at, rows, upload FROM imports"
                " WHERE sha256 = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
                (sha256,)).fetchone()
        except sqlite3.OperationalError:  # a database from before imports (not migrated)
            return None
        if row is None:
            return None
        return dict(zip(("id", "file", "imported_at", "rows", "upload"), row, strict=True))

    def import_uploaded(self, import_id: int) -> bool | None:
        """Whether import ``import_id`` was made with ``--upload`` (None: no such import)."""
        row = self.conn.execute("SELECT upload FROM imports WHERE id = ?",
                                (import_id,)).fetchone()
        return bool(row[0]) if row else None

    def import_list(self) -> list[dict[str, Any]]:
        """Every import, oldest first (``rows_left``: its rows not replaced or undone)."""
        try:
            cur = self.conn.execute(
                "SELECT i.id, i.file, i.sha256, i.imported_at, i.rows, i.upload, i.first_start,"
                " i.last_end, i.sensors, i.replaced, i.undone_at,"
                " (SELECT count(*) FROM import_rows r WHERE r.import_id = i.id) AS rows_left"
                " FROM imports i ORDER BY i.id")
        except sqlite3.OperationalError:  # not migrated yet
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def imported_ranges(self) -> list[tuple[str, int, int, bool]]:
        """(sensor_id, start, end, upload) of every imported row, sorted."""
        try:
            return [(s, a, b, bool(u)) for s, a, b, u in self.conn.execute(
                "SELECT r.sensor_id, r.start, r.end, i.upload FROM import_rows r"
                " JOIN imports i ON i.id = r.import_id ORDER BY r.sensor_id, r.start")]
        except sqlite3.OperationalError:  # not migrated yet
            return []

    def import_extents(self, lo: float, hi: float, sensor_ids: Sequence[str] | None = None
                       ) -> list[tuple[str, int, int]]:
        """(sensor_id, start, end) of imported rows overlapping [lo, hi) (of ``sensor_ids``
        if given), by start; [] before imports existed."""
        sql = "SELECT sensor_id, start, end FROM import_rows WHERE start < ? AND end > ?"
        params: list[Any] = [hi, lo]
        if sensor_ids is not None:
            sql += f" AND sensor_id IN ({', '.join('?' * len(sensor_ids))})"
            params += list(sensor_ids)
        try:
            return [(s, int(a), int(b)) for s, a, b in self.conn.execute(sql + " ORDER BY start",
                                                                         params)]
        except sqlite3.OperationalError:  # not migrated yet
            return []

    def imported_counts(self, lo: int, hi: int) -> list[tuple[str, int, int, int, bool]] | None:
        """(sensor_id, start, in, out, upload) of imported buckets starting in [lo, hi),
        sorted; None when nothing was ever imported (or before m003)."""
        try:
            if self.conn.execute("SELECT 1 FROM imports LIMIT 1").fetchone() is None:
                return None
            rows = self.conn.execute(
                "SELECT c.sensor_id, c.start, c.in_count, c.out_count, im.upload FROM counts c"
                " JOIN imports im ON im.id = c.import_id WHERE c.import_id IS NOT NULL"
                " AND c.start >= ? AND c.start < ? ORDER BY c.sensor_id, c.start",
                (lo, hi)).fetchall()
        except sqlite3.OperationalError:  # a database from before imports existed
            return None
        return [(s, a, i, o, bool(u)) for s, a, i, o, u in rows]
