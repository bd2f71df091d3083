"""Reading and checking a ``kiosk import`` file in one pass, in little memory: the file in
1 MiB chunks (hashed on the way), each row checked on its own, the good rows loaded into
the temp tables of :class:`kiosk.store.import_table.ImportTable`, the problems kept as a
count and the first :data:`MAX_SHOWN` by line.  Times are UTC seconds.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import heapq
import io
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from kiosk.buckets import BUCKET_S

if TYPE_CHECKING:
    from kiosk.store.import_table import ImportTable

HEADER = ["sensor_id", "start", "end", "in", "out"]
#: Columns `kiosk export` adds after :data:`HEADER`; an import reads past them.
EXPORT_EXTRA = ["coverage", "imported"]
SENSOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  #: As in the config.
MAX_ROW_S = 31 * 86400  #: Longest row accepted (a month of totals).
MAX_COUNT = 1_000_000_000  #: As in the upload protocol.
MAX_SHOWN = 50  #: Problems listed before "… and N more".
CHUNK_BYTES = 1 << 20  #: The file is read (and hashed) this many bytes at a time.
BATCH_ROWS = 5000  #: Rows written to the temp table at a time.
MAX_LINE_CHARS = 1 << 20  #: A longer line is not a CSV row.


def iso_utc(ts: float) -> str:
    from kiosk.periods import iso_utc

    return iso_utc(ts)


# -- reading and checking the file ------------------------------------------------------------

@lru_cache(maxsize=1024)  # a row's end is usually the next row's start
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
    if not (t.isascii() and t.isdigit()) and not re.fullmatch(r"\d+", t):
        what = "negative" if re.fullmatch(r"-\d+", t) else "not a whole number"
        return f"{name} {text!r} is {what}; counts are whole numbers ≥ 0"
    n = int(t)
    if n > MAX_COUNT:
        return f"{name} {n} is more than {MAX_COUNT:,}"
    return n


@lru_cache(maxsize=256)
def _valid_sensor_id(sid: str) -> bool:
    return SENSOR_ID.fullmatch(sid) is not None


class _Stop(Exception):
    """The file cannot be read on: ``problem`` (no line number) is the only one listed."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class Problems:
    """Problems of an import, kept in little memory: how many, the first ``MAX_SHOWN`` by
    line (earlier sources first on the same line) and hints shown last."""

    def __init__(self, shown: int = MAX_SHOWN) -> None:
        self.count = 0
        self.hints: list[str] = []
        self._cap = shown
        self._heap: list[tuple[int, int, int, str]] = []  # (-line, -source, -seq, text)
        self._seq = 0

    def add(self, line: int, text: str, *, source: int = 0) -> None:
        self.add_counted(1, [(line, text)], source=source)

    def add_counted(self, n: int, first: Iterable[tuple[int, str]], *, source: int = 0) -> None:
        """Count ``n`` problems of which ``first`` (line, text) are the first by line."""
        self.count += n
        for line, text in first:
            self._seq += 1
            item = (-line, -source, -self._seq, text)
            if len(self._heap) < self._cap:
                heapq.heappush(self._heap, item)
            elif item > self._heap[0]:
                heapq.heapreplace(self._heap, item)

    def shown(self) -> list[str]:
        """The first problems by line, "… and N more", then the hints."""
        texts = [item[3] for item in sorted(self._heap, reverse=True)]
        if self.count > len(texts):
            texts.append(f"… and {self.count - len(texts)} more")
        return texts + self.hints

    def __bool__(self) -> bool:
        return self.count > 0


class ImportProgress(NamedTuple):
    """How far an import is: ``phase`` "read" (``done`` of ``total`` bytes of the file),
    "check" or "write" (``done`` and ``total`` 0)."""

    phase: str
    done: int
    total: int


ProgressCallback = Callable[[ImportProgress], None]


def _text_lines(f: BinaryIO, sha: Any, *, size: int, progress: ProgressCallback | None
                ) -> Iterator[str]:
    """The lines of a UTF-8 file (a BOM dropped; ends \\n, \\r\\n or \\r kept, as
    ``newline=""``), read in chunks that also go to the ``sha`` hash."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pos, tail, first = 0, "", True
    while True:
        chunk = f.read(CHUNK_BYTES)
        final = not chunk
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError as e:
            raise _Stop(f"the file is not UTF-8 text (byte {pos - buffered + e.start}); "
                        f"save it as CSV UTF-8") from None
        pos += len(chunk)
        sha.update(chunk)
        if progress is not None and chunk:
            progress(ImportProgress("read", pos, max(size, pos)))
        if first and text:
            text, first = text.removeprefix("\ufeff"), False
        text = tail + text
        # whole lines only, and never a \r apart from its \n
        cut = len(text) if final else (text.rfind("\n") + 1
                                       or text.rfind("\r", 0, len(text) - 1) + 1)
        if cut:
            yield from io.StringIO(text[:cut], newline="")
        tail = text[cut:]
        if len(tail) > MAX_LINE_CHARS:
            raise _Stop(f"a line near byte {pos:,} is longer than {MAX_LINE_CHARS:,} characters; "
                        f"is this a CSV file?")
        if final:
            return


def _check_row(cells: list[str], line: int, now: float,
               columns: int = 5) -> tuple[int, str, int, int, int, int] | str:
    """The row as (line, sensor_id, start, end, in, out), or its problem text (``columns``:
    how many the header has; those past the fifth are `kiosk export`'s and not read)."""
    if len(cells) != columns:
        return (f"line {line}: expected {columns} columns (as in the header), "
                f"found {len(cells)}")
    sid, a, b, i, o = (c.strip() for c in cells[:5])
    bad: list[str] = []
    if not _valid_sensor_id(sid):
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
        return f"line {line}: {'; '.join(bad)}"
    return (line, sid, start, end, ci, co)  # type: ignore[return-value]


class FileRead(NamedTuple):
    """What one pass over the file found (its problems go to the caller's :class:`Problems`)."""

    sha256: str
    lines: int  # data lines (not blank)
    good: int   # rows loaded into the table


def read_file(f: BinaryIO, table: ImportTable, problems: Problems, *, now: float,
              size: int = 0, progress: ProgressCallback | None = None) -> FileRead:
    """One pass over an import file: every row checked on its own (problems by line), the
    good ones loaded into ``table`` in batches, the file hashed (sha256)."""
    sha = hashlib.sha256()
    lines = good = 0
    try:
        reader = csv.reader(_text_lines(f, sha, size=size, progress=progress))
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):
            header = next(reader, None)
        if header is None:
            raise _Stop("the file is empty; expected the header sensor_id,start,end,in,out")
        names = [c.strip().lower() for c in header]
        if names not in (HEADER, HEADER + EXPORT_EXTRA):
            raise _Stop(f"line {reader.line_num}: the header must be sensor_id,start,end,in,out "
                        f"(as `kiosk export` writes), found {','.join(header)!r}")
        batch: list[tuple[int, str, int, int, int, int]] = []
        future = False
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank line
                lines += 1
                row = _check_row(cells, reader.line_num, now, len(names))
                if isinstance(row, str):
                    problems.add(reader.line_num, row)
                    future = future or "has not ended yet" in row
                    continue
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    table.add(batch)
                    good += len(batch)
                    batch = []
        except csv.Error as e:
            raise _Stop(f"line {reader.line_num}: {e}; is this a CSV file?") from None
        table.add(batch)
        good += len(batch)
        table.loaded()
    except _Stop as stop:
        table.close()
        problems.count, problems.hints = 0, []
        problems.add(_line_of(stop.problem), stop.problem)
        return FileRead(sha.hexdigest(), 0, 0)
    if not good and not problems:
        problems.add(0, "the file has a header but no rows")
    if future:
        problems.hints.append(f"(this computer's clock says it is now {iso_utc(now)}; "
                              f"is that right?)")
    return FileRead(sha.hexdigest(), lines, good)


def _line_of(problem: str) -> int:
    m = re.match(r"line (\d+)", problem)
    return int(m.group(1)) if m else 0
