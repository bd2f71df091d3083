"""The schema: the sqlite-utils migrations m001–m007, and the "is this database ours and
migrated" check the readers use."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

from kiosk.exc import StorageError

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


@migrations()
def m005_serial_totals(db: sqlite_utils.Database) -> None:
    """The last running totals of each cumulative serial sensor (see kiosk.store.totals),
    written with the counts derived from them, so a restart resumes from them."""
    db.executescript(
        """
        CREATE TABLE serial_totals (
            sensor_id TEXT PRIMARY KEY,
            port TEXT NOT NULL,                 -- a different device does not resume
            in_last INTEGER,                    -- last total taken (NULL: none yet)
            in_suspect INTEGER,                 -- a reading held until the next decides
            in_suspect_offline INTEGER NOT NULL DEFAULT 0,  -- 1: a gap before the suspect
            out_last INTEGER,
            out_suspect INTEGER,
            out_suspect_offline INTEGER NOT NULL DEFAULT 0,
            ts REAL NOT NULL,                   -- UTC seconds of the reading
            updated_at REAL NOT NULL
        ) WITHOUT ROWID;
        """
    )


@migrations()
def m006_unplaced_pulses(db: sqlite_utils.Database) -> None:
    """Pulses counted before the clock was set (a Pi without a battery clock), kept with their
    boot time until NTP answers; the periods placed by an estimate; runs on an unset clock."""
    db.executescript(
        """
        CREATE TABLE unplaced (
            boot_id TEXT NOT NULL,              -- the kernel's boot id when it was counted
            boottime REAL NOT NULL,             -- CLOCK_BOOTTIME seconds in that boot
            wall REAL NOT NULL,                 -- the (unset) wall clock's UTC seconds
            sensor_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            count INTEGER NOT NULL
        );
        CREATE TABLE time_estimated (          -- buckets whose pulses were placed by estimate
            sensor_id TEXT NOT NULL,
            start INTEGER NOT NULL,
            PRIMARY KEY (sensor_id, start)
        ) WITHOUT ROWID;
        ALTER TABLE runs ADD COLUMN boot_id TEXT;
        -- wall - boottime when a run started on an unset clock; NULL once placed (or trusted)
        ALTER TABLE runs ADD COLUMN clock_offset REAL;
        """
    )


@migrations()
def m007_feedback(db: sqlite_utils.Database) -> None:
    """Visitors' answers on feedback terminals (see kiosk.store.feedback): 15-minute buckets
    per terminal and level, the raw presses, and presses kept before the clock was set."""
    db.executescript(
        """
        CREATE TABLE feedback (
            sensor_id TEXT NOT NULL,
            start INTEGER NOT NULL,             -- UTC seconds, multiple of 900
            level TEXT NOT NULL,                -- the button's name, e.g. 'very_happy'
            rank INTEGER NOT NULL,              -- 0 = the best level of the terminal
            scale INTEGER NOT NULL,             -- how many levels the terminal has (2-5)
            answers INTEGER NOT NULL DEFAULT 0,
            repeated INTEGER NOT NULL DEFAULT 0, -- presses within lockout_s: not answers
            updated_at REAL NOT NULL,           -- UTC seconds of the last change
            PRIMARY KEY (sensor_id, start, level)
        ) WITHOUT ROWID;
        CREATE INDEX feedback_updated ON feedback (updated_at);
        CREATE TABLE feedback_events (         -- the raw presses, kept event_retention_days
            ts REAL NOT NULL,
            sensor_id TEXT NOT NULL,
            level TEXT NOT NULL,
            rank INTEGER NOT NULL,
            scale INTEGER NOT NULL,
            repeated INTEGER NOT NULL
        );
        CREATE INDEX feedback_events_ts ON feedback_events (ts);
        CREATE TABLE feedback_unplaced (       -- presses taken before the clock was set
            boot_id TEXT NOT NULL,
            boottime REAL NOT NULL,
            wall REAL NOT NULL,
            sensor_id TEXT NOT NULL,
            level TEXT NOT NULL,
            rank INTEGER NOT NULL,
            scale INTEGER NOT NULL,
            repeated INTEGER NOT NULL
        );
        -- a feedback total in the outbox: its levels as JSON (NULL for a visit total); its
        -- in_count/out_count hold the answers and repeated presses
        ALTER TABLE uploads ADD COLUMN levels TEXT;
        """
    )


def pending_migrations(db: sqlite_utils.Database) -> list[str]:
    """Names of the migrations not yet applied to ``db`` (read-only: writes nothing)."""
    return [m.name for m in migrations.pending(db)]


def is_kiosk_database(db: sqlite_utils.Database) -> bool:
    """True if ``db`` was made by the kiosk: it has the ``counts`` table of m001."""
    return db["counts"].exists()


def unknown_migrations(db: sqlite_utils.Database) -> list[str]:
    """Migrations recorded in ``db`` that this kiosk does not know: a newer kiosk made it."""
    known = {m.name for m in migrations.pending(sqlite_utils.Database(memory=True))}
    return [m.name for m in migrations.applied(db) if m.name not in known]


def check_ours(db: sqlite_utils.Database, path: str) -> None:
    """Refuse a database this kiosk must not write: another application's SQLite file
    (tables, but not ours) or one a newer kiosk migrated.  An empty file is ours to create.

    :raises StorageError: naming what was found and what to do.
    """
    tables = [t for t in db.table_names() if not t.startswith("sqlite_")]
    if tables and not is_kiosk_database(db):
        shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        raise StorageError(
            f"{path}: another application's SQLite database (tables {shown}); the kiosk does "
            f"not add its tables to it: set [storage] path to a file of its own")
    unknown = unknown_migrations(db)
    if unknown:
        raise StorageError(
            f"{path}: made by a newer kiosk (migration {', '.join(unknown)} is unknown to this "
            f"version); install that kiosk version or newer, or restore a backup made by this one")
