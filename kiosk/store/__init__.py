"""The local SQLite database: opening, the one write transaction, and every SQL statement
of the package, grouped by table (all times are UTC seconds since the epoch).

Modules:

:mod:`~kiosk.store.schema`   the migrations m001–m007 and the "is it ours, is it migrated" check.
:mod:`~kiosk.store.counts`   ``counts`` (visitors per sensor in 15-minute buckets keyed by UTC
                             start, ``in`` and ``out`` apart), ``events`` (the raw pulse log,
                             kept ``event_retention_days``), ``runs`` (when the daemon was
                             running, so a zero-visitor hour is told from a counter that was
                             off), ``sensors`` (latest state, for ``kiosk status``) and ``meta``
                             (small key/value facts: daemon pid, last flush, restarts).
:mod:`~kiosk.store.journal`  ``journal``: what happened (starts, stops, faults, uploads).
:mod:`~kiosk.store.staff`    ``annotations``, ``imports`` and ``import_rows``.
:mod:`~kiosk.store.totals`   ``serial_totals``: the last running totals of each cumulative
                             serial sensor, written with the counts derived from them.
:mod:`~kiosk.store.placement` ``unplaced`` (pulses counted before the clock was set) and
                             ``time_estimated`` (buckets placed by estimate).
:mod:`~kiosk.store.feedback` ``feedback`` (visitors' answers per terminal and level in
                             15-minute buckets), ``feedback_events`` (raw presses) and
                             ``feedback_unplaced`` (presses taken before the clock was set).
:mod:`~kiosk.store.outbox`   ``uploads`` (each closed period's total, revision and state) and
                             ``upload_requests`` (bodies stored before sending, re-sent byte
                             for byte).

Who writes which table (each in short ``BEGIN IMMEDIATE`` transactions, :meth:`Store.write`;
SQLite lets one writer in at a time and the others wait up to ``BUSY_TIMEOUT_MS``):

* the daemon's writer thread: ``counts``, ``events``, ``runs``, ``sensors``, ``meta``,
  ``serial_totals``, ``feedback``, ``feedback_events``, ``feedback_unplaced``;
* the uploader (the daemon's upload thread or ``kiosk sync``): ``uploads``,
  ``upload_requests`` and ``meta`` key ``upload`` (and ``upload_frontier``/``upload_scanned_at``);
* the staff commands: ``kiosk annotate`` writes ``annotations``, ``kiosk import`` writes
  ``imports``, ``import_rows`` and ``counts`` rows with ``import_id`` set;
* ``journal``: all of them, each entry inside its writer's own transaction.

Other CLI commands only read, through their own connections (WAL mode lets them run beside
the writers); :meth:`Store.open_reader` never creates or migrates.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from kiosk.buckets import BUCKET_S, bucket_start
from kiosk.exc import DiskFullError, StorageError
from kiosk.store.counts import CountsMixin, RunRow, SensorRow
from kiosk.store.feedback import FeedbackMixin
from kiosk.store.journal import JournalEntry, JournalMixin, insert_journal
from kiosk.store.outbox import Backlog, OutboxMixin, OutboxRow, StoredRequest, UploadState
from kiosk.store.placement import Placement, PlacementMixin, UnplacedPulse
from kiosk.store.reserve import ensure_reserve, release_reserve
from kiosk.store.schema import check_ours, is_kiosk_database, migrations, pending_migrations
from kiosk.store.staff import StaffMixin
from kiosk.store.totals import TotalsMixin

__all__ = [
    "BUCKET_S", "BUSY_TIMEOUT_MS", "Backlog", "JournalEntry", "OutboxRow", "Placement", "RunRow",
    "SensorRow", "Store", "StoredRequest", "UnplacedPulse", "UploadState", "bucket_start",
    "insert_journal", "migrations", "pid_alive",
]

log = logging.getLogger("kiosk.store")

BUSY_TIMEOUT_MS = 10_000


DB_FILE_MODE = 0o660  #: The database file, before the umask: the service user and its group.

#: Page size (bytes) of a new database.  A commit of a few counts rewrites one page: as a
#: WAL frame (page + 24 bytes) 4,096-byte pages touch two file-system blocks every commit,
#: 1,024-byte ones mostly one (SD-card wear).  An existing database keeps its page size.
NEW_DB_PAGE_SIZE = 1024


def _create_group_writable(path: str) -> None:
    """Create ``path`` (if missing) with :data:`DB_FILE_MODE` less the umask.

    SQLite would create it 0644, and gives its ``-wal``/``-shm`` files the database file's
    mode; with the unit's ``UMask=0007`` that makes them 0640, so a ``-shm`` a group member's
    reader happened to create could not be written by the daemon.  At 0660 the group shares
    them whoever creates them (with a setgid state directory they all belong to the group).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def _no_access(path: str) -> str:
    """The one line for a user who may not read the database's directory."""
    return (f"{path}: permission denied; the database is readable by the service user and "
            f"group kiosk: run as a member (sudo usermod -aG kiosk $USER, then log in again) "
            f"or with sudo")


def _connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with our busy timeout.  ``readonly``: ``mode=ro``, and ``immutable=1``
    when the database has no ``-wal`` file (no writer has it open, and the last one checkpointed
    everything into the main file), so that a reader never creates ``-wal``/``-shm`` files of its
    own, owned by its user, which would lock the daemon out of its own database."""
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        if not os.path.exists(path + "-wal"):
            uri += "&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class Store(CountsMixin, JournalMixin, StaffMixin, OutboxMixin, TotalsMixin, PlacementMixin,
            FeedbackMixin):
    """The counts database.  Open with :meth:`open` (writer) or :meth:`open_reader` (CLI).

    Its methods come per table family from :mod:`kiosk.store.counts`,
    :mod:`~kiosk.store.journal`, :mod:`~kiosk.store.staff`, :mod:`~kiosk.store.outbox`,
    :mod:`~kiosk.store.totals` and :mod:`~kiosk.store.feedback`.
    """

    def __init__(self, db: sqlite_utils.Database, path: str) -> None:
        self.db = db
        self.conn = db.conn
        self.path = path
        #: Migrations this database still lacks (a reader opened a database that an older
        #: kiosk made; ``kiosk run`` migrates it).
        self.pending_migrations: list[str] = []

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open (creating and migrating as needed) for writing: WAL, ``synchronous=FULL``."""
        path = str(path)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if path != ":memory:":
                _create_group_writable(path)
            conn = _connect(path)
            db = sqlite_utils.Database(conn, execute_plugins=False)
            if path == ":memory:" or os.path.getsize(path) == 0:  # new: before the first write
                db.execute(f"PRAGMA page_size = {NEW_DB_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed flush survives a power cut, not only a crash.
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA foreign_keys = ON")
            check_ours(db, path)
            migrations.apply(db)
        except StorageError:
            raise
        except sqlite3.DatabaseError as e:
            raise StorageError(_explain(path, e)) from e
        except PermissionError:
            raise StorageError(_no_access(path)) from None
        except OSError as e:
            raise StorageError(f"{path}: cannot create the database: {e.strerror or e}") from e
        if path != ":memory:":
            ensure_reserve(path)
        return cls(db, path)

    @classmethod
    def open_reader(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing database for reading only; never creates or migrates.

        A database an older kiosk made opens (its readers give what it has), with
        :attr:`pending_migrations` set and a warning that ``kiosk run`` migrates it.
        """
        path = str(path)
        try:
            exists = Path(path).exists()
        except PermissionError:
            raise StorageError(_no_access(path)) from None
        if not exists:
            raise StorageError(
                f"{path}: no database yet; it is created when `kiosk run` first starts "
                f"(check [storage] path in the config)"
            )
        try:
            conn = _connect(path, readonly=True)
            conn.execute("PRAGMA query_only = ON")
            db = sqlite_utils.Database(conn, execute_plugins=False)
            if not is_kiosk_database(db):
                raise StorageError(f"{path}: not a kiosk database (no counts table)")
            pending = pending_migrations(db)
        except sqlite3.DatabaseError as e:
            raise StorageError(_explain(path, e)) from e
        store = cls(db, path)
        store.pending_migrations = pending
        if pending:
            log.warning("%s: made by an older kiosk (missing %s); `kiosk run` migrates it",
                        path, ", ".join(pending))
        return store

    @classmethod
    def open_annotator(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing, migrated database to add or delete annotations only (the web
        dashboard): never creates, migrates or reserves anything, and an SQLite authorizer
        refuses every write to a table but ``annotations`` and ``journal``, and every change
        of the schema, so a fault in the dashboard cannot touch the counts."""
        path = str(path)
        if not Path(path).exists():
            raise StorageError(f"{path}: no database yet; it is created when `kiosk run` starts")
        try:
            conn = _connect(path)
            conn.set_authorizer(_annotations_only)
            db = sqlite_utils.Database(conn, execute_plugins=False)
            if not is_kiosk_database(db):
                raise StorageError(f"{path}: not a kiosk database (no counts table)")
            pending = pending_migrations(db)
        except sqlite3.DatabaseError as e:
            raise StorageError(_explain(path, e)) from e
        if pending:
            conn.close()
            raise StorageError(f"{path}: made by an older kiosk (missing {', '.join(pending)}); "
                               f"start the daemon once (`kiosk run` migrates it)")
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
            raise _storage_error(self.path, e) from e
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.DatabaseError):
                raise _storage_error(self.path, e) from e
            raise

    # -- the whole file ----------------------------------------------------------------------

    def release_reserve(self) -> bool:
        """Free the disk reserve after a write found the disk full; True if there was one."""
        return release_reserve(self.path) > 0

    def ensure_reserve(self) -> bool:
        """Make the disk reserve again if it is missing and there is room; True if it exists."""
        return ensure_reserve(self.path)

    def size_bytes(self) -> int:
        """Bytes on disk of the database and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def checkpoint(self) -> None:
        """Copy everything in the WAL into the database file and empty the WAL."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.DatabaseError as e:
            raise _storage_error(self.path, e) from e

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``ok`` when sound)."""
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


#: The tables :meth:`Store.open_annotator` may write.
ANNOTATOR_TABLES = frozenset({"annotations", "journal"})
_ROW_WRITES = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
_SCHEMA_CHANGES = frozenset({
    sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_CREATE_TRIGGER,
    sqlite3.SQLITE_CREATE_VIEW, sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_TEMP_INDEX,
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_VIEW, sqlite3.SQLITE_DROP_TABLE,
    sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_VIEW,
    sqlite3.SQLITE_DROP_TEMP_TABLE, sqlite3.SQLITE_DROP_TEMP_INDEX, sqlite3.SQLITE_DROP_TEMP_TRIGGER,
    sqlite3.SQLITE_DROP_TEMP_VIEW, sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_ATTACH,
    sqlite3.SQLITE_DETACH})


def _annotations_only(action: int, arg1: str | None, _arg2: str | None, _db: str | None,
                      _source: str | None) -> int:
    """SQLite authorizer of :meth:`Store.open_annotator`."""
    if action in _ROW_WRITES and arg1 not in ANNOTATOR_TABLES:
        return sqlite3.SQLITE_DENY
    if action in _SCHEMA_CHANGES:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _storage_error(path: str, e: sqlite3.DatabaseError) -> StorageError:
    """The :class:`StorageError` (a :class:`DiskFullError` when space ran out) for ``e``."""
    cls = DiskFullError if "full" in str(e) else StorageError
    return cls(_explain(path, e))


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
