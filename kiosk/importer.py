"""``kiosk import``: historical totals from an old counter, so year-on-year comparisons
work from day one.

The file has the columns of ``kiosk export`` (``sensor_id,start,end,in,out``, a header
line, times in ISO 8601 with ``Z`` or an offset).  Every row is checked before anything
is written; one bad row and nothing is imported.  All rows go in one short write
transaction, so the import is all or nothing, also beside the running daemon.

Where imported counts go: the ``counts`` bucket at the row's start, with ``import_id``
set (NULL marks what this kiosk counted).  A row longer than 15 minutes (hourly or daily
totals) sits whole in its first quarter hour, so 15-minute views show it there; hourly
and daily views are exact when the rows are.  ``import_rows`` keeps each row's true
extent, to refuse overlaps and for ``--replace``.

Imported counts are kept locally unless ``--upload``: :func:`uploadable` removes them
from the totals the uploader sends.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.buckets import BUCKET_S
from kiosk.exc import ImportFileError
from kiosk.journal import add_journal, local_text
from kiosk.periods import Total

if TYPE_CHECKING:
    from kiosk.store import Store

HEADER = ["sensor_id", "start", "end", "in", "out"]
SENSOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  #: As in the config.
MAX_ROW_S = 31 * 86400  #: Longest row accepted (a month of totals).
MAX_COUNT = 1_000_000_000  #: As in the upload protocol.
MAX_SHOWN = 50  #: Problems listed before "… and N more".


def iso_utc(ts: float) -> str:
    from kiosk.periods import iso_utc

    return iso_utc(ts)


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    sensor_id: str
    start: int
    end: int
    in_count: int
    out_count: int


@dataclass
class Plan:
    """What an import would do: rows to write, rows already there, rows it replaces."""

    rows: list[Row]
    new: list[Row]
    unchanged: list[Row]
    replaced: list[tuple[str, int, int, int]]  # (sensor_id, start, end, import_id) to drop
    problems: list[str]


# -- reading and checking the file ------------------------------------------------------------

def _time(text: str) -> int | str:
    """UTC seconds of an ISO 8601 time with Z or an offset, or a problem text."""
    t = text.strip()
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        return f"cannot read the time {text!r} (expected e.g. 2026-11-22T07:00:00Z)"
    if dt.tzinfo is None:
        return f"the time {text!r} has no time zone; add Z (UTC) or an offset such as +02:00"
    ts = dt.timestamp()
    if ts != int(ts):
        return f"the time {text!r} has fractions of a second"
    return int(ts)


def _count(text: str, name: str) -> int | str:
    t = text.strip()
    if not re.fullmatch(r"\d+", t):
        what = "negative" if re.fullmatch(r"-\d+", t) else "not a whole number"
        return f"{name} {text!r} is {what}; counts are whole numbers ≥ 0"
    n = int(t)
    if n > MAX_COUNT:
        return f"{name} {n} is more than {MAX_COUNT:,}"
    return n


def parse_csv(data: bytes, *, now: float) -> tuple[list[Row], list[str], int]:
    """Rows, problems (``line N: …``, by line) and the number of data lines of an import
    file; checks every row on its own and against the other rows of the file (duplicates,
    overlaps)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return [], [f"the file is not UTF-8 text (byte {e.start}); save it as CSV UTF-8"], 0
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[str] = []
    rows: list[Row] = []
    header = next(reader, None)
    while header is not None and not any(c.strip() for c in header):
        header = next(reader, None)
    if header is None:
        return [], ["the file is empty; expected the header sensor_id,start,end,in,out"], 0
    if [c.strip().lower() for c in header] != HEADER:
        return [], [f"line {reader.line_num}: the header must be sensor_id,start,end,in,out "
                    f"(as `kiosk export` writes), found {','.join(header)!r}"], 0
    lines = 0
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        lines += 1
        if len(cells) != 5:
            problems.append(f"line {line}: expected 5 columns (sensor_id,start,end,in,out), "
                            f"found {len(cells)}")
            continue
        sid, a, b, i, o = (c.strip() for c in cells)
        bad: list[str] = []
        if not SENSOR_ID.fullmatch(sid):
            bad.append(f"sensor id {sid!r} is not valid (letters, digits and . _ : -, "
                       f"at most 64, as in the config)")
        start, end = _time(a), _time(b)
        for v in (start, end):
            if isinstance(v, str):
                bad.append(v)
        if isinstance(start, int) and isinstance(end, int):
            if end <= start:
                bad.append(f"end {b} is not after start {a}")
            elif start % BUCKET_S:
                bad.append(f"start {a} is not on a quarter hour")
            elif (end - start) % BUCKET_S:
                bad.append(f"the period {a}..{b} is not a whole number of quarter hours")
            elif end - start > MAX_ROW_S:
                bad.append(f"the period {a}..{b} is longer than 31 days")
            elif end > now:
                bad.append(f"the period {a}..{b} has not ended yet")
        ci, co = _count(i, "in"), _count(o, "out")
        bad += [v for v in (ci, co) if isinstance(v, str)]
        if bad:
            problems.append(f"line {line}: {'; '.join(bad)}")
            continue
        rows.append(Row(line, sid, start, end, ci, co))  # type: ignore[arg-type]
    if not rows and not problems:
        problems.append("the file has a header but no rows")
    problems = sorted(problems + _file_overlaps(rows), key=_line_of)
    if any("has not ended yet" in p for p in problems):
        problems.append(f"(this computer's clock says it is now {iso_utc(now)}; is that right?)")
    return rows, problems, lines


def _line_of(problem: str) -> int:
    m = re.match(r"line (\d+)", problem)
    return int(m.group(1)) if m else 0


def _file_overlaps(rows: list[Row]) -> list[str]:
    by_sensor: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_sensor[r.sensor_id].append(r)
    out: list[tuple[int, str]] = []
    for sid, rs in by_sensor.items():
        rs.sort(key=lambda r: (r.start, r.line))
        prev: Row | None = None
        for r in rs:
            if prev is not None and r.start < prev.end:
                if r.start == prev.start:
                    out.append((r.line, f"line {r.line}: duplicate of line {prev.line} "
                                         f"({sid} {iso_utc(r.start)})"))
                else:
                    out.append((r.line, f"line {r.line}: {sid} {iso_utc(r.start)}..{iso_utc(r.end)} "
                                         f"overlaps line {prev.line} ({iso_utc(prev.start)}.."
                                         f"{iso_utc(prev.end)})"))
            if prev is None or r.end > prev.end:
                prev = r
    return [text for _line, text in sorted(out)]


# -- checking against the database --------------------------------------------------------------

def known_sensors(store: Store, configured: list[str] | None) -> set[str]:
    """Sensor ids this kiosk knows: configured, with state, or with counts."""
    return set(configured or ()) | set(store.sensor_ids())


def plan(store: Store, rows: list[Row], *, replace_imported: bool, tz: ZoneInfo,
         known: set[str] | None = None, any_sensor: bool = False,
         upload_period_s: int | None = None, upload: bool | None = None) -> Plan:
    """Check rows against the database (in one read snapshot); the caller writes.

    Refused: rows overlapping counts this kiosk recorded for the sensor (or a time the
    counter was running after it first counted that sensor); rows overlapping imported
    rows with other values (unless ``replace_imported``); unknown sensors when the kiosk
    knows its sensors (unless ``any_sensor``); with ``upload_period_s``, rows that do not
    fit one upload period.  Rows equal to imported ones already there (same values and,
    if ``upload`` is given, the same upload choice) are ``unchanged``.
    """
    problems: list[tuple[int, str]] = []
    new: list[Row] = []
    unchanged: list[Row] = []
    replaced: dict[tuple[str, int], tuple[int, int]] = {}
    by_sensor: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_sensor[r.sensor_id].append(r)
    if known and not any_sensor:
        for sid in sorted(set(by_sensor) - known):
            first = min(by_sensor[sid], key=lambda r: r.line)
            lines = sorted(r.line for r in by_sensor[sid])
            where = f"line {lines[0]}" + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")
            problems.append((first.line, f"{where}: unknown sensor {sid!r}; this kiosk has "
                                         f"{', '.join(sorted(known))}. Rename it in the file to the "
                                         f"sensor that counts that door now, or use --any-sensor"))
    runs = store.runs(min(r.start for r in rows), max(r.end for r in rows)) if rows else []
    for sid, rs in by_sensor.items():
        lo, hi = min(r.start for r in rs), max(r.end for r in rs)
        counted = store.counted_starts(sid, lo, hi)
        since_s = store.first_counted(sid)  # UTC s of the sensor's first own bucket
        imported = store.import_rows_overlapping(sid, lo, hi)
        for r in rs:
            if upload_period_s and r.start // upload_period_s != (r.end - 1) // upload_period_s:
                problems.append((r.line, f"line {r.line}: {_span(r)} does not fit one "
                                         f"{upload_period_s // 60}-minute upload period, so it "
                                         f"cannot be uploaded; import without --upload (it is "
                                         f"then kept for local reports only)"))
                continue
            if any(r.start <= s < r.end for s in counted) or (
                    since_s is not None and r.end > since_s
                    and any(a < r.end and b > r.start for a, b in runs)):
                since = local_text(since_s, tz, seconds=False) if since_s is not None else "?"
                problems.append((r.line, f"line {r.line}: {_span(r)} overlaps counts this kiosk "
                                         f"recorded for {sid} (it counts {sid} since {since}); "
                                         f"only earlier periods can be imported"))
                continue
            hits = [h for h in imported if h[0] < r.end and h[1] > r.start]
            if not hits:
                new.append(r)
            elif len(hits) == 1 and hits[0][:2] == (r.start, r.end) and \
                    (hits[0][3], hits[0][4]) == (r.in_count, r.out_count) and \
                    (upload is None or bool(hits[0][5]) == upload):
                unchanged.append(r)
            elif replace_imported:
                new.append(r)
                for h in hits:
                    replaced[(sid, h[0])] = (h[1], h[2])
            else:
                h = hits[0]
                what = ("was imported with other values" if h[:2] == (r.start, r.end)
                        else "overlaps an earlier imported row")
                if h[:2] == (r.start, r.end) and (h[3], h[4]) == (r.in_count, r.out_count):
                    what = ("was imported " + ("for upload" if h[5] else "for local use only")
                            + " before")
                problems.append((r.line, f"line {r.line}: {_span(r)} {what} (import #{h[2]}: "
                                         f"{iso_utc(h[0])}..{iso_utc(h[1])} in={h[3]} out={h[4]}); "
                                         f"use --replace to overwrite it"))
    # a replaced row that is also re-imported unchanged stays
    keep = {(r.sensor_id, r.start) for r in unchanged}
    return Plan(rows, new, unchanged,
                [(s, a, b, i) for (s, a), (b, i) in sorted(replaced.items()) if (s, a) not in keep],
                [text for _line, text in sorted(problems)])


def _span(r: Row) -> str:
    return f"{r.sensor_id} {iso_utc(r.start)}..{iso_utc(r.end)}"


def _raise(path: str, problems: list[str], *, rows: int) -> None:
    real = [p for p in problems if not p.startswith("(")]
    shown = real[:MAX_SHOWN]
    if len(real) > MAX_SHOWN:
        shown.append(f"… and {len(real) - MAX_SHOWN} more")
    shown += [p for p in problems if p.startswith("(")]  # hints last
    n = len(real)
    where = f" in {rows} row(s)" if rows else ""
    raise ImportFileError(f"{path}: {n} problem{'s' if n != 1 else ''}{where}; "
                          f"nothing was imported\n" + "\n".join(shown))


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
                upload_period_s: int | None = None, now: float | None = None) -> Result:
    """Check ``path`` and import it in one transaction; raises :class:`ImportFileError` with
    every problem when anything is wrong (and writes nothing)."""
    now = time.time() if now is None else now
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImportFileError(f"{path}: cannot read the file: {e.strerror or e}") from None
    sha = hashlib.sha256(data).hexdigest()
    if not replace_imported:
        prev = previous_import(store, sha)
        if prev is not None:
            return Result(None, Plan([], [], [], [], []), already=prev)
    rows, problems, lines = parse_csv(data, now=now)
    kw: dict[str, Any] = {"replace_imported": replace_imported, "tz": tz, "known": known,
          "any_sensor": any_sensor, "upload_period_s": upload_period_s, "upload": upload}
    if problems or dry_run:
        # the good rows are checked against the database too: one run lists every problem
        p = plan(store, rows, **kw)
        problems = sorted(problems + p.problems, key=_line_of)
        if problems:
            _raise(path, problems, rows=lines)
        return Result(None, p)  # a dry run
    from kiosk.store.staff import drop_imported_row, insert_import, insert_imported_rows

    # Checked and written in one short BEGIN IMMEDIATE transaction: the daemon waits at most
    # this long to flush (it retries, and keeps counting in memory meanwhile).
    with store.write() as conn:
        p = plan(store, rows, **kw)
        if p.problems:
            _raise(path, p.problems, rows=lines)  # rolls back: nothing written
        if not p.new and not p.replaced:
            return Result(None, p)  # every row is already there
        written = p.new
        sensors = sorted({r.sensor_id for r in rows})
        # the extent of every bucket this import changes (for the uploader's rescan)
        lo = min([r.start for r in rows] + [x[1] for x in p.replaced])
        hi = max([r.end for r in rows] + [x[2] for x in p.replaced])
        import_id = insert_import(conn, file=str(Path(path).resolve()), sha256=sha, now=now,
                                  rows=len(written), upload=upload, first_start=lo, last_end=hi,
                                  sensors=sensors, replaced=len(p.replaced))
        for sid, start, _end, _old in p.replaced:
            drop_imported_row(conn, sid, start)
        insert_imported_rows(conn, import_id, now, [
            (r.sensor_id, r.start, r.end, r.in_count, r.out_count) for r in written])
        add_journal(conn, "INFO", "import", import_summary(Path(path).name, p, import_id, upload, tz),
                    now=now)
    return Result(import_id, p)


def import_summary(name: str, p: Plan, import_id: int | None, upload: bool, tz: ZoneInfo) -> str:
    rows = p.rows
    if not rows:
        return f"{name}: nothing to import"
    sensors = sorted({r.sensor_id for r in rows})
    lo, hi = min(r.start for r in rows), max(r.end for r in rows)
    visitors = sum(r.in_count for r in p.new)
    if import_id:
        head = f"imported {len(p.new)} row(s) from {name} (import #{import_id})"
    elif not p.new and not p.replaced:
        return f"{name}: nothing to import: all {len(rows)} row(s) are already there"
    else:
        head = f"would import {len(p.new)} row(s) from {name}"
    text = (f"{head}: {', '.join(sensors)}, {local_text(lo, tz, seconds=False)} to "
            f"{local_text(hi, tz, seconds=False)}, {visitors:,} in")
    if p.unchanged:
        text += f"; {len(p.unchanged)} row(s) already there unchanged"
    if p.replaced:
        text += f"; replaced {len(p.replaced)} earlier imported row(s)"
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
