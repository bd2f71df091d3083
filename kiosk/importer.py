"""``kiosk import``: historical totals from an old counter, so year-on-year comparisons
work from day one.

The file has the columns of ``kiosk export`` (``sensor_id,start,end,in,out``, a header
line, times in ISO 8601 with ``Z`` or an offset).  Every row is checked before anything
is written; one bad row and nothing is imported.  All rows go in one short write
transaction, so the import is all or nothing, also beside the running daemon.

The file is read once, 1 MiB at a time (hashed on the way, to recognise a file imported
before); its good rows wait in TEMP tables of the store's connection
(:mod:`kiosk.import_csv`, :mod:`kiosk.store.import_table`), where the checks against the file's other rows and
against the database are SQL.  Memory does not grow with the file: of the problems, the
first :data:`MAX_SHOWN` by line are kept, and how many there are.

Where imported counts go: the ``counts`` bucket at the row's start, with ``import_id``
set (NULL marks what this kiosk counted).  A row longer than 15 minutes (hourly or daily
totals) sits whole in its first quarter hour, so 15-minute views show it there; hourly
and daily views are exact when the rows are.  ``import_rows`` keeps each row's true
extent, to refuse overlaps and for ``--replace``.

Imported counts are kept locally unless ``--upload``: :func:`uploadable` removes them
from the totals the uploader sends.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.exc import ImportFileError
from kiosk.import_csv import (
    MAX_SHOWN,
    ImportProgress,
    Problems,
    ProgressCallback,
    iso_utc,
    read_file,
)
from kiosk.journal import add_journal, local_text
from kiosk.periods import Total

if TYPE_CHECKING:
    from kiosk.store import Store
    from kiosk.store.import_table import ImportTable


# -- the file's rows against each other -------------------------------------------------------

def _file_overlaps(table: ImportTable, problems: Problems) -> None:
    n, first = table.overlaps(MAX_SHOWN)
    texts = []
    for line, sid, a, b, pl, pa, pb in first:
        if a == pa:
            texts.append((line, f"line {line}: duplicate of line {pl} ({sid} {iso_utc(a)})"))
        else:
            texts.append((line, f"line {line}: {sid} {iso_utc(a)}..{iso_utc(b)} overlaps line {pl} "
                                f"({iso_utc(pa)}..{iso_utc(pb)})"))
    problems.add_counted(n, texts)


# -- checking against the database --------------------------------------------------------------

def known_sensors(store: Store, configured: list[str] | None) -> set[str]:
    """Sensor ids this kiosk knows: configured, with state, or with counts."""
    return set(configured or ()) | set(store.sensor_ids())


@dataclass
class Plan:
    """What an import would do (figures; the rows stay in the store's temp tables)."""

    rows: int = 0                  #: good rows of the file
    new: int = 0                   #: rows to write
    unchanged: int = 0             #: rows equal to imported ones already there
    replaced: int = 0              #: imported rows the new ones replace (--replace)
    visitors: int = 0              #: sum of "in" of the rows to write
    sensors: list[str] = field(default_factory=list)
    first_start: int | None = None  #: UTC s, of the file's rows
    last_end: int | None = None
    changed_start: int | None = None  #: UTC s, of every bucket the import changes
    changed_end: int | None = None


def plan(store: Store, table: ImportTable, problems: Problems, *, replace_imported: bool,
         tz: ZoneInfo, known: set[str] | None = None, any_sensor: bool = False,
         upload_period_s: int | None = None, upload: bool = False) -> Plan:
    """Check the file's rows (in ``table``) against the database, in the caller's
    transaction; problems go to ``problems``.

    Refused: rows overlapping counts this kiosk recorded for the sensor (or a time the
    counter was running after it first counted that sensor); rows overlapping imported
    rows with other values (unless ``replace_imported``); unknown sensors when the kiosk
    knows its sensors (unless ``any_sensor``); with ``upload_period_s``, rows that do not
    fit one upload period.  Rows equal to imported ones already there (same values and
    the same upload choice) are ``unchanged``.
    """
    if known and not any_sensor:
        n, first = table.unknown_sensors(known, MAX_SHOWN)
        texts = []
        for sid, line, rows in first:
            where = f"line {line}" + (f" (and {rows - 1} more)" if rows > 1 else "")
            texts.append((line, f"{where}: unknown sensor {sid!r}; this kiosk has "
                                f"{', '.join(sorted(known))}. Rename it in the file to the "
                                f"sensor that counts that door now, or use --any-sensor"))
        problems.add_counted(n, sorted(texts), source=1)
    lo_hi = table.conn.execute("SELECT min(start), max(end) FROM temp.imp_rows").fetchone()
    runs = store.runs(*lo_hi) if lo_hi[0] is not None else []
    table.classify(runs, upload_period_s=upload_period_s, upload=upload,
                   replace_imported=replace_imported)
    n, refused = table.refused(MAX_SHOWN)
    problems.add_counted(n, [(r["line"], _refusal(r, tz, upload_period_s)) for r in refused],
                         source=1)
    s = table.stats()
    lows = [x for x in (s.first_start, s.replaced_start) if x is not None]
    highs = [x for x in (s.last_end, s.replaced_end) if x is not None]
    return Plan(s.rows, s.new, s.unchanged, s.replaced, s.visitors, table.sensors(),
                s.first_start, s.last_end, min(lows, default=None), max(highs, default=None))


def _refusal(r: dict[str, Any], tz: ZoneInfo, upload_period_s: int | None) -> str:
    from kiosk.store.import_table import Fate

    line, sid = r["line"], r["sensor_id"]
    span = f"{sid} {iso_utc(r['start'])}..{iso_utc(r['end'])}"
    if r["fate"] == Fate.PERIOD:
        return (f"line {line}: {span} does not fit one {(upload_period_s or 0) // 60}-minute "
                f"upload period, so it cannot be uploaded; import without --upload (it is "
                f"then kept for local reports only)")
    if r["fate"] == Fate.COUNTED:
        since = local_text(r["since"], tz, seconds=False) if r["since"] is not None else "?"
        return (f"line {line}: {span} overlaps counts this kiosk recorded for {sid} (it counts "
                f"{sid} since {since}); only earlier periods can be imported")
    same = (r["h_start"], r["h_end"]) == (r["start"], r["end"])
    what = "was imported with other values" if same else "overlaps an earlier imported row"
    if same and (r["h_in"], r["h_out"]) == (r["in_count"], r["out_count"]):
        what = "was imported " + ("for upload" if r["h_upload"] else "for local use only") + " before"
    return (f"line {line}: {span} {what} (import #{r['h_import']}: {iso_utc(r['h_start'])}.."
            f"{iso_utc(r['h_end'])} in={r['h_in']} out={r['h_out']}); use --replace to "
            f"overwrite it")


def _raise(path: str, problems: Problems, *, rows: int) -> None:
    n = problems.count
    where = f" in {rows} row(s)" if rows else ""
    raise ImportFileError(f"{path}: {n} problem{'s' if n != 1 else ''}{where}; "
                          f"nothing was imported\n" + "\n".join(problems.shown()))


# -- writing --------------------------------------------------------------------------------------

@dataclass
class Result:
    import_id: int | None
    plan: Plan
    already: dict[str, Any] | None = None  # the earlier import of the same file


def previous_import(store: Store, sha256: str) -> dict[str, Any] | None:
    """The earlier import of a file with this content (not undone), if any."""
    return store.previous_import(sha256)


def import_file(store: Store, path: str, *, tz: ZoneInfo, upload: bool = False,
                replace_imported: bool = False, dry_run: bool = False,
                known: set[str] | None = None, any_sensor: bool = False,
                upload_period_s: int | None = None, now: float | None = None,
                progress: ProgressCallback | None = None) -> Result:
    """Check ``path`` and import it in one transaction; raises :class:`ImportFileError` with
    every problem when anything is wrong (and writes nothing).

    The file is read once, in chunks (``progress`` is told the bytes read); its rows wait
    in temp tables of the store's connection, so memory does not grow with the file."""
    now = time.time() if now is None else now
    problems = Problems()
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise ImportFileError(f"{path}: cannot read the file: {e.strerror or e}") from None
    from kiosk.store.import_table import ImportTable

    table = ImportTable(store.conn)
    try:
        with f:
            try:
                size = os.fstat(f.fileno()).st_size
                read = read_file(f, table, problems, now=now, size=size, progress=progress)
            except OSError as e:
                raise ImportFileError(f"{path}: cannot read the file: {e.strerror or e}") from None
        if not replace_imported:
            prev = previous_import(store, read.sha256)
            if prev is not None:
                return Result(None, Plan(), already=prev)
        if not read.good and problems:
            _raise(path, problems, rows=read.lines)
        if progress is not None:
            progress(ImportProgress("check", 0, 0))
        _file_overlaps(table, problems)
        kw: dict[str, Any] = {"replace_imported": replace_imported, "tz": tz, "known": known,
              "any_sensor": any_sensor, "upload_period_s": upload_period_s, "upload": upload}
        if problems or dry_run:
            # the good rows are checked against the database too: one run lists every problem
            store.conn.execute("BEGIN")  # one read snapshot
            try:
                p = plan(store, table, problems, **kw)
            finally:
                store.conn.rollback()
            if problems:
                _raise(path, problems, rows=read.lines)
            return Result(None, p)  # a dry run
        from kiosk.store.staff import insert_import

        # Checked and written in one short BEGIN IMMEDIATE transaction: the daemon waits at
        # most this long to flush (it retries, and keeps counting in memory meanwhile).
        with store.write() as conn:
            p = plan(store, table, problems, **kw)
            if problems:
                _raise(path, problems, rows=read.lines)  # rolls back: nothing written
            if not p.new and not p.replaced:
                return Result(None, p)  # every row is already there
            if progress is not None:
                progress(ImportProgress("write", 0, 0))
            import_id = insert_import(conn, file=str(Path(path).resolve()), sha256=read.sha256,
                                      now=now, rows=p.new, upload=upload,
                                      first_start=p.changed_start or 0,
                                      last_end=p.changed_end or 0, sensors=p.sensors,
                                      replaced=p.replaced)
            table.write(import_id, now)
            add_journal(conn, "INFO", "import",
                        import_summary(Path(path).name, p, import_id, upload, tz), now=now)
        return Result(import_id, p)
    finally:
        table.close()


def import_summary(name: str, p: Plan, import_id: int | None, upload: bool, tz: ZoneInfo) -> str:
    if not p.rows or p.first_start is None or p.last_end is None:
        return f"{name}: nothing to import"
    if import_id:
        head = f"imported {p.new} row(s) from {name} (import #{import_id})"
    elif not p.new and not p.replaced:
        return f"{name}: nothing to import: all {p.rows} row(s) are already there"
    else:
        head = f"would import {p.new} row(s) from {name}"
    text = (f"{head}: {', '.join(p.sensors)}, {local_text(p.first_start, tz, seconds=False)} to "
            f"{local_text(p.last_end, tz, seconds=False)}, {p.visitors:,} in")
    if p.unchanged:
        text += f"; {p.unchanged} row(s) already there unchanged"
    if p.replaced:
        text += f"; replaced {p.replaced} earlier imported row(s)"
    text += ("; to be uploaded, flagged imported" if upload
             else "; kept for local reports (not uploaded)")
    return text


def undo(store: Store, import_id: int, *, tz: ZoneInfo, now: float | None = None) -> int:
    """Remove the counts an import wrote (those not replaced since); returns how many."""
    from kiosk.store.staff import import_file_and_undone, undo_import_rows

    now = time.time() if now is None else now
    with store.write() as conn:
        row = import_file_and_undone(conn, import_id)
        if row is None:
            raise ImportFileError(f"there is no import #{import_id}; see `kiosk import --list`")
        if row[1] is not None:
            raise ImportFileError(f"import #{import_id} was already undone on {local_text(row[1], tz)}")
        n = undo_import_rows(conn, import_id, now)
        add_journal(conn, "INFO", "import", f"undid import #{import_id} ({Path(row[0]).name}): "
                                            f"removed {n} imported row(s)", now=now)
    return n


def imports(store: Store) -> list[dict[str, Any]]:
    """Every import, oldest first (``rows_left``: its rows not replaced or undone)."""
    return store.import_list()


# -- for the uploader and reports ------------------------------------------------------------------

def imported_ranges(store: Store) -> list[tuple[str, int, int, bool]]:
    """(sensor_id, start, end, upload) of every imported row, sorted."""
    return store.imported_ranges()


def uploadable(store: Store, totals: list[Total]) -> list[Total]:
    """The totals to upload, from those :func:`kiosk.periods.totals` gives (order kept).

    Counts imported without ``--upload`` are taken out, and a period left with nothing
    the kiosk counted and no running time is dropped.  A period with counts imported
    ``--upload`` and no running time is sent with coverage 1 (the old counter's figure
    stands for the whole period; protocol §7, flag ``imported``).
    """
    if not totals:
        return totals
    lo, hi = min(t.start for t in totals), max(t.end for t in totals)
    rows = store.imported_counts(lo, hi)
    if rows is None:
        return totals
    # per sensor, the imported buckets sorted by start (as the query gives them), so each
    # total finds its own with two bisections: O((totals + rows) log rows), not their product
    starts: dict[str, list[int]] = defaultdict(list)
    buckets: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)
    for sid, start, i, o, up in rows:
        starts[sid].append(start)
        buckets[sid].append((i, o, up))
    out = []
    for t in totals:
        keys = starts.get(t.sensor_id)
        if not keys:
            out.append(t)
            continue
        a, b = bisect_left(keys, t.start), bisect_left(keys, t.end)
        mine = buckets[t.sensor_id][a:b]
        if not mine:
            out.append(t)
            continue
        i = t.in_count - sum(b[0] for b in mine if not b[2])
        o = t.out_count - sum(b[1] for b in mine if not b[2])
        cov = t.coverage
        if cov <= 0:
            if any(b[2] for b in mine):
                cov = 1.0
            elif i == 0 and o == 0:
                continue  # only counts kept locally: nothing to send
        out.append(Total(t.sensor_id, t.start, t.end, i, o, cov))  # dataclasses.replace is slow
    return out


# -- the command ------------------------------------------------------------------------------------
