"""The upload outbox: ``uploads`` (each closed period's total, revision and state) and
``upload_requests`` (request bodies stored before sending, re-sent byte for byte).

Only the uploader writes them (the daemon's upload thread or ``kiosk sync``, one at a
time under the upload lock).  Times are UTC seconds; ``start``/``end`` bound a period.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import NamedTuple


class UploadState(StrEnum):
    """``uploads.state``: the values stored in the database."""

    PENDING = "pending"
    SENT = "sent"
    QUARANTINED = "quarantined"


class OutboxRow(NamedTuple):
    """One total of the outbox, as it goes into a request (coverage 0–1).

    A feedback terminal's total has ``levels`` (the JSON of :func:`kiosk.feedback.levels_json`;
    ``in_count``/``out_count`` then hold its answers and repeated presses); a visit total has
    None."""

    sensor_id: str
    start: int
    end: int
    in_count: int
    out_count: int
    coverage: float
    revision: int
    levels: str | None = None


class StoredRequest(NamedTuple):
    """A request stored before sending: its key, exact body and the totals it carries
    (JSON ``[[sensor_id, start, revision], ...]``)."""

    id: int
    key: str
    body: bytes
    items: str


class Backlog(NamedTuple):
    """The outbox at a glance: pending totals, the oldest pending start (UTC s or None),
    quarantined and sent totals."""

    pending: int
    oldest: int | None
    quarantined: int
    sent: int


_ROW = "sensor_id, start, end, in_count, out_count, coverage, revision, levels"

# Counts of the outbox per state, kept by the connection's own writes (see OutboxMixin.backlog).
_BACKLOG_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS upload_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TEMP TRIGGER IF NOT EXISTS upload_counts_insert AFTER INSERT ON main.uploads BEGIN"
    " INSERT OR IGNORE INTO upload_counts VALUES (NEW.state, 0);"
    " UPDATE upload_counts SET n = n + 1 WHERE state = NEW.state; END",
    "CREATE TEMP TRIGGER IF NOT EXISTS upload_counts_delete AFTER DELETE ON main.uploads BEGIN"
    " UPDATE upload_counts SET n = n - 1 WHERE state = OLD.state; END",
    "CREATE TEMP TRIGGER IF NOT EXISTS upload_counts_update AFTER UPDATE OF state ON main.uploads"
    " WHEN OLD.state IS NOT NEW.state BEGIN"
    " UPDATE upload_counts SET n = n - 1 WHERE state = OLD.state;"
    " INSERT OR IGNORE INTO upload_counts VALUES (NEW.state, 0);"
    " UPDATE upload_counts SET n = n + 1 WHERE state = NEW.state; END",
)


class MergeTotal(NamedTuple):
    """A period's total as the scan found it, for :func:`merge_totals` (``flags``: the JSON
    list sent with it, or None)."""

    sensor_id: str
    start: int
    end: int
    in_count: int
    out_count: int
    coverage: float
    flags: str | None
    levels: str | None = None  #: a feedback total's levels (JSON), None for visits


def merge_total(conn: sqlite3.Connection, *, sensor_id: str, start: int, end: int,
                in_count: int, out_count: int, coverage: float, flags: str | None) -> bool:
    """Put one period's total in the outbox (see :func:`merge_totals`); True if that
    changed anything."""
    return merge_totals(conn, [MergeTotal(sensor_id, start, end, in_count, out_count,
                                          coverage, flags)]) > 0


def merge_totals(conn: sqlite3.Connection, found: Iterable[MergeTotal]) -> int:
    """Put periods' totals in the outbox inside the caller's transaction; returns how many
    that changed.  A total found twice counts once, as last found.

    A revision that may have reached the server (sent, or in a stored request) is never
    changed in place: the total gets ``revision + 1``.  Quarantined totals stay so.
    One range query per sensor reads what the outbox holds, and the writes are batched.
    """
    latest = {(t.sensor_id, t.start): t for t in found}
    spans: dict[str, list[int]] = {}
    for sid, start in latest:
        span = spans.setdefault(sid, [start, start])
        span[0], span[1] = min(span[0], start), max(span[1], start)
    held: dict[tuple[str, int], tuple] = {}
    for sid, (lo, hi) in spans.items():
        for row in conn.execute(
                "SELECT start, in_count, out_count, coverage, revision, state, attempted, flags,"
                " levels FROM uploads WHERE sensor_id = ? AND start >= ? AND start <= ?", (sid, lo, hi)):
            held[(sid, row[0])] = row[1:]
    inserts, updates = [], []
    for key, t in latest.items():
        row = held.get(key)
        if row is None:
            inserts.append((t.sensor_id, t.start, t.end, t.in_count, t.out_count, t.coverage,
                            UploadState.PENDING, t.flags, t.levels))
        elif (row[0], row[1], round(row[2], 4), row[6], row[7]) != (
                t.in_count, t.out_count, round(t.coverage, 4), t.flags, t.levels):
            bump = 1 if (row[4] == UploadState.SENT or row[5]) else 0
            updates.append((t.in_count, t.out_count, t.coverage, t.flags, t.levels, bump, bump,
                            UploadState.QUARANTINED, UploadState.PENDING, t.sensor_id, t.start))
    conn.executemany(
        "INSERT INTO uploads (sensor_id, start, end, in_count, out_count, coverage,"
        " revision, state, flags, levels) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)", inserts)
    conn.executemany(
        "UPDATE uploads SET in_count = ?, out_count = ?, coverage = ?, flags = ?, levels = ?,"
        " revision = revision + ?, attempted = CASE WHEN ? THEN 0 ELSE attempted END,"
        " state = CASE WHEN state = ? THEN state ELSE ? END"
        " WHERE sensor_id = ? AND start = ?", updates)
    return len(inserts) + len(updates)


class OutboxMixin:
    """Operations of :class:`kiosk.store.Store` on ``uploads`` and ``upload_requests``."""

    conn: sqlite3.Connection

    def has_outbox(self) -> bool:
        """True if the database has the outbox (m002)."""
        return self.db["uploads"].exists()  # type: ignore[attr-defined]

    def backlog(self) -> Backlog:
        """Pending, oldest pending start, quarantined and sent totals.

        Counting the outbox reads all of it, and the uploader asks before every request
        (health): so a connection that may write counts once, then keeps the counts up to
        date with temporary triggers on its own writes, and counts again only after
        another connection committed (``PRAGMA data_version``).  Read-only connections
        and open transactions count every time.
        """
        conn = self.conn
        if conn.in_transaction:
            return self._counted_backlog()
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if getattr(self, "_backlog_version", None) != version:
                for sql in _BACKLOG_DDL:
                    conn.execute(sql)
                conn.execute("DELETE FROM temp.upload_counts")
                conn.execute("INSERT INTO temp.upload_counts SELECT state, count(*) FROM uploads"
                             " GROUP BY state")
                conn.commit()
                self._backlog_version = version
        except sqlite3.OperationalError:  # a read-only connection (kiosk status)
            if conn.in_transaction:
                conn.rollback()
            return self._counted_backlog()
        n = dict(conn.execute("SELECT state, n FROM temp.upload_counts").fetchall())
        oldest = conn.execute("SELECT min(start) FROM uploads WHERE state = ?",
                              (UploadState.PENDING,)).fetchone()[0]
        return Backlog(n.get(UploadState.PENDING, 0), oldest,
                       n.get(UploadState.QUARANTINED, 0), n.get(UploadState.SENT, 0))

    def _counted_backlog(self) -> Backlog:
        n, oldest, q, sent = self.conn.execute(
            "SELECT sum(state = ?), min(CASE WHEN state = ? THEN start END),"
            " sum(state = ?), sum(state = ?) FROM uploads",
            (UploadState.PENDING, UploadState.PENDING, UploadState.QUARANTINED,
             UploadState.SENT)).fetchone()
        return Backlog(n or 0, oldest, q or 0, sent or 0)

    def outbox_flags(self, sensor_id: str, start: int) -> list[str] | None:
        """The flags stored with a total (None: none)."""
        row = self.conn.execute("SELECT flags FROM uploads WHERE sensor_id = ? AND start = ?",
                                (sensor_id, start)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def outbox_flags_of(self, items: Iterable[OutboxRow]) -> dict[tuple[str, int], list[str]]:
        """The flags stored with each of ``items`` that has any, by (sensor_id, start): one
        range query per sensor."""
        spans: dict[str, tuple[int, int]] = {}
        for r in items:
            lo, hi = spans.get(r.sensor_id, (r.start, r.start))
            spans[r.sensor_id] = (min(lo, r.start), max(hi, r.start))
        out, parsed = {}, {}  # a few distinct flag lists: each parsed once
        for sid, (lo, hi) in spans.items():
            for start, flags in self.conn.execute(
                    "SELECT start, flags FROM uploads WHERE sensor_id = ? AND start >= ?"
                    " AND start <= ? AND flags IS NOT NULL", (sid, lo, hi)):
                if flags not in parsed:
                    parsed[flags] = json.loads(flags) if flags else []
                if parsed[flags]:
                    out[(sid, start)] = list(parsed[flags])
        return out

    def outbox_row(self, sensor_id: str, start: int) -> OutboxRow | None:
        """The outbox total of one sensor's period, or None."""
        row = self.conn.execute(f"SELECT {_ROW} FROM uploads WHERE sensor_id = ? AND start = ?",
                                (sensor_id, start)).fetchone()
        return OutboxRow(*row) if row else None

    def pending_totals(self, limit: int) -> list[OutboxRow]:
        """The oldest ``limit`` pending totals, by start then sensor."""
        return [OutboxRow(*r) for r in self.conn.execute(
            f"SELECT {_ROW} FROM uploads WHERE state = ? ORDER BY start, sensor_id LIMIT ?",
            (UploadState.PENDING, limit))]

    def quarantined_totals(self) -> list[tuple[OutboxRow, str | None]]:
        """(total, error) of every quarantined total, by start then sensor."""
        return [(OutboxRow(*r[:8]), r[8]) for r in self.conn.execute(
            f"SELECT {_ROW}, error FROM uploads WHERE state = ? ORDER BY start, sensor_id",
            (UploadState.QUARANTINED,))]

    def store_request(self, *, key: str, body: bytes, items: Sequence[OutboxRow],
                      now: float) -> int:
        """Store a request body before it is sent and mark its totals attempted; returns
        its id."""
        refs = json.dumps([[r.sensor_id, r.start, r.revision] for r in items])
        with self.write() as conn:  # type: ignore[attr-defined]
            cur = conn.execute(
                "INSERT INTO upload_requests (key, body, items, created_at) VALUES (?, ?, ?, ?)",
                (key, body, refs, now))
            conn.executemany(
                "UPDATE uploads SET attempted = 1 WHERE sensor_id = ? AND start = ?"
                " AND revision = ?", [(r.sensor_id, r.start, r.revision) for r in items])
            return int(cur.lastrowid)

    def next_request(self) -> StoredRequest | None:
        """The oldest stored request, or None."""
        row = self.conn.execute(
            "SELECT id, key, body, items FROM upload_requests ORDER BY id LIMIT 1").fetchone()
        return StoredRequest(*row) if row else None

    def request_count(self) -> int:
        """How many requests are stored (not yet answered definitely)."""
        return self.conn.execute("SELECT count(*) FROM upload_requests").fetchone()[0]

    def count_attempt(self, request_id: int) -> None:
        """Note that a stored request is about to be sent once more."""
        with self.write() as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE upload_requests SET attempts = attempts + 1 WHERE id = ?",
                         (request_id,))

    def mark_sent(self, request_id: int, items: Iterable[tuple[str, int, int]],
                  now: float) -> None:
        """After a 2xx: the (sensor_id, start, revision) totals are sent at ``now`` and the
        request is deleted, in one transaction."""
        with self.write() as conn:  # type: ignore[attr-defined]
            conn.executemany(
                "UPDATE uploads SET state = ?, sent_at = ?, error = NULL"
                " WHERE sensor_id = ? AND start = ? AND revision = ?",
                [(UploadState.SENT, now, sid, start, rev) for sid, start, rev in items])
            conn.execute("DELETE FROM upload_requests WHERE id = ?", (request_id,))

    def drop_request(self, request_id: int) -> None:
        """Delete a stored request (refused; its totals go out again otherwise)."""
        with self.write() as conn:  # type: ignore[attr-defined]
            conn.execute("DELETE FROM upload_requests WHERE id = ?", (request_id,))

    def quarantine(self, sensor_id: str, start: int, revision: int, error: str) -> None:
        """Set one revision of a total aside with the server's ``error``."""
        with self.write() as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE uploads SET state = ?, error = ?"
                         " WHERE sensor_id = ? AND start = ? AND revision = ?",
                         (UploadState.QUARANTINED, error, sensor_id, start, revision))

    def requeue_quarantined(self) -> int:
        """Put quarantined totals back as pending (a new revision if one was attempted);
        returns how many."""
        with self.write() as conn:  # type: ignore[attr-defined]
            return conn.execute(
                "UPDATE uploads SET state = ?, revision = revision + attempted,"
                " attempted = 0, error = NULL WHERE state = ?",
                (UploadState.PENDING, UploadState.QUARANTINED)).rowcount
