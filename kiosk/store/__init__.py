"""The local SQLite database: schema, migrations, the one write transaction, reads.

Layout (all times are UTC seconds since the epoch):

``counts``   visitors per sensor in 15-minute buckets keyed by UTC start, ``in`` and
             ``out`` apart; hourly and daily totals derive from them.
``events``   the raw event log (one row per pulse message), kept ``event_retention_days``.
``runs``     the intervals the daemon was running, so a zero-visitor hour can be told
             from an hour when the counter was off.
``sensors``  the latest state of each sensor, for ``kiosk status``.
``journal``  what happened: starts, stops, faults, clock jumps, uploads.
``meta``     small key/value facts (daemon pid, last flush, restarts).
``uploads``  the upload outbox: each closed period's total, revision and state.
``upload_requests`` request bodies stored before sending, re-sent byte for byte.

Only the daemon's writer thread writes (one writer owns SQLite); CLI commands read
through their own connections, which WAL mode lets run beside the writer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils import Migrations

from kiosk.exc import StorageError

BUCKET_S = 900  #: Seconds per count bucket (15 minutes).
BUSY_TIMEOUT_MS = 10_000

migrations = Migrations("kiosk")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE counts (
            sensor_id TEXT NOT NULL,
            start INTEGER NOT NULL,          -- UTC seconds, multiple of 900
            in_count INTEGER NOT NULL DEFAULT 0,
            out_count INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,        -- UTC seconds of the last change
            PRIMARY KEY (sensor_id, start)
        ) WITHOUT ROWID;
        CREATE INDEX counts_updated ON counts (updated_at);
        CREATE TABLE events (
            ts REAL NOT NULL,
            sensor_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            count INTEGER NOT NULL
        );
        CREATE INDEX events_ts ON events (ts);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            last_seen REAL NOT NULL,
            stopped_at REAL,
            pid INTEGER,
            version TEXT,
            stop_reason TEXT
        );
        CREATE TABLE sensors (
            sensor_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            state_since REAL,
            last_pulse REAL,
            rejected_lines INTEGER NOT NULL DEFAULT 0,
            message TEXT,
            updated_at REAL NOT NULL
        );
        CREATE TABLE journal (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            level TEXT NOT NULL,
            kind TEXT NOT NULL,
            sensor_id TEXT,
            message TEXT NOT NULL
        );
        CREATE INDEX journal_ts ON journal (ts);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """
    )


@migrations()
def m002_uploads(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE uploads (
            sensor_id TEXT NOT NULL,
            start INTEGER NOT NULL,             -- UTC seconds
            end INTEGER NOT NULL,
            in_count INTEGER NOT NULL,
            out_count INTEGER NOT NULL,
            coverage REAL NOT NULL,
            revision INTEGER NOT NULL DEFAULT 1,
            state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'quarantined')),
            attempted INTEGER NOT NULL DEFAULT 0, -- this revision went out in a request
            sent_at REAL,
            error TEXT,
            PRIMARY KEY (sensor_id, start)
        ) WITHOUT ROWID;
        CREATE INDEX uploads_state ON uploads (state, start);
        CREATE TABLE upload_requests (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            body BLOB NOT NULL,
            items TEXT NOT NULL,                -- JSON [[sensor_id, start, revision], ...]
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0
        );
        """
    )


@migrations()
def m003_staff(db: sqlite_utils.Database) -> None:
    """Staff data: annotations on periods and imported history (kiosk annotate / import)."""
    db.executescript(
        """
        CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            start INTEGER NOT NULL,             -- UTC seconds
            end INTEGER NOT NULL,               -- UTC seconds, exclusive
            sensor_id TEXT,                     -- NULL: the whole site
            kind TEXT NOT NULL CHECK (kind IN ('closed', 'estimate', 'sensor-fault')),
            note TEXT NOT NULL,
            created_at REAL NOT NULL,
            deleted_at REAL,                    -- kept, so uploads can re-send without the flag
            CHECK (end > start)
        );
        CREATE INDEX annotations_start ON annotations (start);
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            file TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            imported_at REAL NOT NULL,
            rows INTEGER NOT NULL,              -- rows written (identical rows skipped)
            upload INTEGER NOT NULL DEFAULT 0,  -- 1: also send to the statistics server
            first_start INTEGER,
            last_end INTEGER,
            sensors TEXT,                       -- comma-separated sensor ids
            replaced INTEGER NOT NULL DEFAULT 0,
            undone_at REAL
        );
        CREATE INDEX imports_sha256 ON imports (sha256);
        -- the extent of each imported row (its counts sit in the bucket at its start)
        CREATE TABLE import_rows (
            sensor_id TEXT NOT NULL,
            start INTEGER NOT NULL,
            end INTEGER NOT NULL,
            import_id INTEGER NOT NULL REFERENCES imports (id),
            PRIMARY KEY (sensor_id, start)
        ) WITHOUT ROWID;
        ALTER TABLE counts ADD COLUMN import_id INTEGER;  -- NULL: counted by this kiosk
        CREATE INDEX counts_imported ON counts (start) WHERE import_id IS NOT NULL;
        ALTER TABLE uploads ADD COLUMN flags TEXT;         -- JSON list sent with this revision
        """
    )


@migrations()
def m004_fewer_indexes(db: sqlite_utils.Database) -> None:
    """Every index on a table the writer appends to is one more page rewritten per commit
    (SD-card wear).  The two dropped here served only hourly scans, which a full scan of a
    few hundred thousand rows does as well."""
    db.executescript("DROP INDEX IF EXISTS counts_updated; DROP INDEX IF EXISTS events_ts;")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of the local journal (``level`` is a logging level name)."""

    ts: float
    level: str
    kind: str
    message: str
    sensor_id: str | None = None


@dataclass
class SensorRow:
    sensor_id: str
    kind: str
    state: str
    state_since: float | None = None
    last_pulse: float | None = None
    rejected_lines: int = 0
    message: str | None = None


def bucket_start(ts: float) -> int:
    """The UTC start (seconds) of the 15-minute bucket holding ``ts``."""
    return int(ts // BUCKET_S) * BUCKET_S


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class Store:
    """The counts database.  Open with :meth:`open` (writer) or :meth:`open_reader` (CLI)."""

    def __init__(self, db: sqlite_utils.Database, path: str) -> None:
        self.db = db
        self.conn = db.conn
        self.path = path

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open (creating and migrating as needed) for writing: WAL, ``synchronous=FULL``."""
        path = str(path)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(path)
            db = sqlite_utils.Database(conn, execute_plugins=False)
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed flush survives a power cut, not only a crash.
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            migrations.apply(db)
        except sqlite3.DatabaseError as e:
            raise StorageError(_explain(path, e)) from e
        except OSError as e:
            raise StorageError(f"{path}: cannot create the database: {e.strerror or e}") from e
        return cls(db, path)

    @classmethod
    def open_reader(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing database for reading only; never creates or migrates."""
        path = str(path)
        if not Path(path).exists():
            raise StorageError(
                f"{path}: no database yet; it is created when `kiosk run` first starts "
                f"(check [storage] path in the config)"
            )
        try:
            conn = _connect(path, readonly=not os.access(Path(path).parent, os.W_OK))
            conn.execute("PRAGMA query_only = ON")
            db = sqlite_utils.Database(conn, execute_plugins=False)
            if not db["counts"].exists():
                raise StorageError(f"{path}: not a kiosk database (no counts table)")
        except sqlite3.DatabaseError as e:
            raise StorageError(_explain(path, e)) from e
        return cls(db, path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; commits on success, rolls back on error."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise StorageError(_explain(self.path, e)) from e
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.DatabaseError):
                raise StorageError(_explain(self.path, e)) from e
            raise

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
    ) -> None:
        """Write one flush in a single transaction.

        ``counts`` maps (sensor_id, bucket start) to [in, out] to add; the increment is an
        UPSERT with ``count = count + excluded.count``.  ``events`` are (ts, sensor_id,
        direction, count) rows.  ``run_id``'s ``last_seen`` is moved to ``now``; ``meta``
        values (JSON-able) are stored under their keys.
        """
        with self.write() as conn:
            if counts:
                conn.executemany(
                    "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sensor_id, start) DO UPDATE SET"
                    " in_count = in_count + excluded.in_count,"
                    " out_count = out_count + excluded.out_count,"
                    " updated_at = excluded.updated_at",
                    [(s, b, c[0], c[1], now) for (s, b), c in counts.items()],
                )
            if events:
                conn.executemany(
                    "INSERT INTO events (ts, sensor_id, direction, count) VALUES (?, ?, ?, ?)",
                    events,
                )
            self._write_sensors(conn, sensors, now)
            self._write_journal(conn, journal)
            if run_id is not None:
                conn.execute("UPDATE runs SET last_seen = max(last_seen, ?)"
                             " WHERE id = ? AND stopped_at IS NULL", (now, run_id))
            if meta:
                self._write_meta(conn, meta)

    def _write_sensors(self, conn: sqlite3.Connection, rows: Iterable[SensorRow], now: float) -> None:
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

    def _write_journal(self, conn: sqlite3.Connection, entries: Iterable[JournalEntry]) -> None:
        conn.executemany(
            "INSERT INTO journal (ts, level, kind, sensor_id, message) VALUES (?, ?, ?, ?, ?)",
            [(e.ts, e.level, e.kind, e.sensor_id, e.message) for e in entries],
        )

    def add_journal(self, *entries: JournalEntry) -> None:
        """Append journal entries in their own transaction."""
        with self.write() as conn:
            self._write_journal(conn, entries)

    def start_run(self, *, now: float, pid: int, version: str) -> int:
        """Record that the daemon started counting at ``now``; returns the run id."""
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (started_at, last_seen, pid, version) VALUES (?, ?, ?, ?)",
                (now, now, pid, version),
            )
            return int(cur.lastrowid)

    def end_run(self, run_id: int, *, now: float, reason: str) -> None:
        """Record that run ``run_id`` stopped counting at ``now`` for ``reason``."""
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET last_seen = max(last_seen, ?), stopped_at = max(last_seen, ?),"
                " stop_reason = ? WHERE id = ?",
                (now, now, reason, run_id),
            )

    def set_meta(self, **values: Any) -> None:
        with self.write() as conn:
            self._write_meta(conn, values)

    def _write_meta(self, conn: sqlite3.Connection, values: dict[str, Any]) -> None:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def prune(self, *, now: float, event_retention_days: int, journal_retention_days: int) -> int:
        """Delete raw events and journal lines past retention; returns rows deleted.

        Counts, runs and upload records are never pruned: they are the product.
        """
        with self.write() as conn:
            n = conn.execute("DELETE FROM events WHERE ts < ?",
                             (now - event_retention_days * 86400,)).rowcount
            n += conn.execute("DELETE FROM journal WHERE ts < ?",
                              (now - journal_retention_days * 86400,)).rowcount
        return n

    # -- reads ------------------------------------------------------------------------------

    def meta(self, key: str, default: Any = None) -> Any:
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

    def sensor_rows(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM sensors ORDER BY sensor_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def sensor_ids(self) -> list[str]:
        """Every sensor id with counts or state, sorted."""
        rows = self.conn.execute(
            "SELECT sensor_id FROM sensors UNION SELECT DISTINCT sensor_id FROM counts ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def totals_between(self, since: float, until: float) -> dict[str, tuple[int, int]]:
        """Per sensor (in, out) summed over buckets starting in [since, until)."""
        rows = self.conn.execute(
            "SELECT sensor_id, sum(in_count), sum(out_count) FROM counts"
            " WHERE start >= ? AND start < ? GROUP BY sensor_id",
            (since, until),
        ).fetchall()
        return {s: (int(i), int(o)) for s, i, o in rows}

    def journal(self, *, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT ts, level, kind, sensor_id, message FROM journal WHERE ts >= ?"
            " ORDER BY ts DESC, id DESC LIMIT ?",
            (since if since is not None else 0, limit),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in reversed(cur.fetchall())]

    def size_bytes(self) -> int:
        """Bytes on disk of the database and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


def _explain(path: str, e: sqlite3.DatabaseError) -> str:
    text = str(e)
    if "disk is full" in text or "database or disk is full" in text:
        return (f"{path}: the disk is full; free space (df -h {Path(path).parent}); "
                f"counts are kept in memory meanwhile")
    if "readonly" in text or "unable to open" in text:
        return (f"{path}: cannot write the database ({text}); check that the directory exists "
                f"and belongs to the service user")
    if "malformed" in text or "not a database" in text:
        return (f"{path}: the database is damaged ({text}); stop the daemon, keep a copy and "
                f"run `sqlite3 {path} .recover`")
    if "locked" in text or "busy" in text:
        return f"{path}: the database stayed locked for {BUSY_TIMEOUT_MS / 1000:.0f} s ({text})"
    return f"{path}: {text}"


def pid_alive(pid: int | None) -> bool:
    """True if a process with this pid exists (the daemon recorded in ``meta``)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user (the service user)
        return True
    return True
