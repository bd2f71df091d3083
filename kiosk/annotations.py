"""``kiosk annotate``: marks staff put on periods, shown in reports and sent with uploads.

Kinds: ``closed`` (the site was closed, e.g. a holiday), ``estimate`` (the counts are an
estimate), ``sensor-fault`` (a sensor was faulty).  An annotation covers [start, end) in
UTC seconds, for one sensor or the whole site (``sensor_id`` NULL), with a note.
Deleting keeps the row (``deleted_at``) so uploads can re-send the periods it flagged.

Uploads carry them as quality flags per total (docs/protocol.md §7): :func:`flags_for`.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left, bisect_right
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.buckets import BUCKET_S
from kiosk.exc import AnnotationError, ExportError
from kiosk.journal import add_journal, local_text

if TYPE_CHECKING:
    from kiosk.store import Store

KINDS = ("closed", "estimate", "sensor-fault")
MAX_SPAN_S = 400 * 86400  #: Longest annotation (a typo guard: more than a year is refused).
MAX_NOTE = 500

_DAY_WORDS = {"today": 0, "yesterday": -1, "tomorrow": 1}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# -- reading DATE|RANGE --------------------------------------------------------------------------

def _day(text: str, tz: ZoneInfo, now: float) -> date | None:
    t = text.strip().lower()
    if t in _DAY_WORDS:
        return datetime.fromtimestamp(now, tz).date() + timedelta(days=_DAY_WORDS[t])
    if _DATE.fullmatch(t):
        try:
            return date.fromisoformat(t)
        except ValueError as e:
            raise AnnotationError(f"invalid date {text!r}: {e}") from None
    return None


def parse_range(text: str, tz: ZoneInfo, *, now: float) -> tuple[int, int]:
    """[start, end) in UTC seconds of ``DATE`` or ``A..B``.

    A date is a whole local day (23, 24 or 25 hours across DST); as the end of a range it
    is included (``2026-12-24..2026-12-26``: three days).  Times without an offset are
    local (``2026-11-22T10:00..2026-11-22T12:00``); ISO times with ``Z`` or an offset are
    taken as they are.  ``today``, ``yesterday`` and ``tomorrow`` are dates.
    """
    from kiosk.periods import local_midnight, parse_time

    parts = text.split("..")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise AnnotationError(f"cannot read {text!r}; use a date (2026-12-24), days "
                              f"(2026-12-24..2026-12-26) or times (2026-11-22T10:00..2026-11-22T12:00)")
    first, last = parts[0], parts[-1]
    d0, d1 = _day(first, tz, now), _day(last, tz, now)
    if len(parts) == 1 and d0 is None:
        raise AnnotationError(f"{text!r} is a moment, not a period; give a date (2026-12-24) or a "
                              f"range such as 2026-11-22T10:00..2026-11-22T12:00")
    try:
        start = local_midnight(d0, tz) if d0 else parse_time(first, tz, now=now)
        end = local_midnight(d1 + timedelta(days=1), tz) if d1 else parse_time(last, tz, now=now)
    except ExportError as e:
        raise AnnotationError(str(e)) from None
    if end <= start:
        raise AnnotationError(f"{text!r}: the end is not after the start")
    if end - start > MAX_SPAN_S:
        raise AnnotationError(f"{text!r} is longer than {MAX_SPAN_S // 86400} days; annotate a "
                              f"shorter period")
    return int(start), int(end)


def span_text(start: float, end: float, tz: ZoneInfo) -> str:
    """``Thu 2026-12-24 – Sat 2026-12-26 (3 days)``, ``Sun 2026-03-29 (23 h)`` or
    ``Sun 2026-11-22 10:00 – 12:00 +02:00``, in local time."""
    a, b = datetime.fromtimestamp(start, tz), datetime.fromtimestamp(end, tz)
    hours = (end - start) / 3600
    if a.time() == b.time() == datetime.min.time():
        last = b.date() - timedelta(days=1)
        days = (b.date() - a.date()).days
        if days == 1:
            extra = "" if hours == 24 else f" ({hours:g} h)"
            return f"{a:%a %Y-%m-%d}{extra}"
        return f"{a:%a %Y-%m-%d} – {last:%a %Y-%m-%d} ({days} days)"
    if a.date() == b.date():
        return f"{a:%a %Y-%m-%d %H:%M} – {b:%H:%M} {local_text(end, tz)[-6:]} ({hours:g} h)"
    return f"{a:%a %Y-%m-%d %H:%M} – {b:%a %Y-%m-%d %H:%M} {local_text(end, tz)[-6:]}"


# -- the table (SQL in kiosk.store.staff) ----------------------------------------------------------


def add(store: Store, *, start: int, end: int, kind: str, note: str, sensor_id: str | None = None,
        tz: ZoneInfo, now: float | None = None) -> int:
    """Record an annotation (and a journal line) in one transaction; returns its id."""
    if kind not in KINDS:
        raise AnnotationError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    note = note.strip()
    if not note:
        raise AnnotationError("a note is required: say why, e.g. --note \"closed for Christmas\"")
    now = time.time() if now is None else now
    from kiosk.store.staff import insert_annotation

    with store.write() as conn:
        aid = insert_annotation(conn, start=start, end=end, sensor_id=sensor_id, kind=kind,
                                note=note, now=now)
        add_journal(conn, "INFO", "annotation",
                    f"annotation #{aid} added: {kind}, {sensor_id or 'whole site'}, "
                    f"{span_text(start, end, tz)}: {note}", now=now, sensor_id=sensor_id)
    return aid


def delete(store: Store, annotation_id: int, *, tz: ZoneInfo, now: float | None = None
           ) -> dict[str, Any]:
    """Delete an annotation (kept with ``deleted_at``); returns it."""
    now = time.time() if now is None else now
    from kiosk.store.staff import annotation, mark_annotation_deleted

    with store.write() as conn:
        found = annotation(conn, annotation_id)
        if found is None or found[1] is not None:
            raise AnnotationError(f"there is no annotation #{annotation_id}"
                                  + (" (it was deleted already)" if found else "")
                                  + "; see `kiosk annotate --list`")
        a = found[0]
        mark_annotation_deleted(conn, annotation_id, now)
        add_journal(conn, "INFO", "annotation",
                    f"annotation #{annotation_id} deleted: {a['kind']}, "
                    f"{a['sensor_id'] or 'whole site'}, {span_text(a['start'], a['end'], tz)}: "
                    f"{a['note']}", now=now, sensor_id=a["sensor_id"])
    return a


def annotations_between(store: Store, start: float, end: float, *,
                        sensor_id: str | None = None) -> list[dict[str, Any]]:
    """Annotations overlapping [start, end), sorted by start then id.

    Each is a dict: id, start, end (UTC seconds), sensor_id (None: whole site), kind,
    note, created_at.  With ``sensor_id``: only those for that sensor or the whole site.
    Deleted annotations are left out; a database without the table gives [].
    """
    return store.annotations_overlapping(start, end, sensor_id=sensor_id)


def flags_for(store: Store, sensor_id: str, start: float, end: float, *,
              for_upload: bool = False) -> list[str]:
    """Quality flags of one sensor's period [start, end), sorted: the kinds of annotations
    on it (for the sensor or the whole site), ``imported`` if imported counts are in
    it (``for_upload``: only those imported with ``--upload``; the others are not sent), and
    ``time-estimated`` if pulses in it were placed by estimate (counted in a boot that ended
    before its clock was set; see :mod:`kiosk.store.placement`).
    """
    flags = {a["kind"] for a in annotations_between(store, start, end, sensor_id=sensor_id)}
    if store.has_imported_counts(sensor_id, start, end, for_upload=for_upload):
        flags.add("imported")
    if "m006_unplaced_pulses" not in store.pending_migrations \
            and store.time_estimated(sensor_id, start, end):
        flags.add("time-estimated")
    return sorted(flags)


class FlagIndex:
    """:func:`flags_for` of many periods inside [lo, hi) from two queries (UTC seconds),
    for the uploader's scan: the same flags, without two queries per period.

    Annotations go in a dict by UTC day, imported and time-estimated buckets in sorted lists
    per sensor.
    """

    def __init__(self, store: Store, lo: float, hi: float, *, for_upload: bool = False) -> None:
        self._by_day: dict[int, list[dict[str, Any]]] = {}
        for a in store.annotations_overlapping(lo, hi):
            for day in range(int(a["start"]) // 86400, (int(a["end"]) - 1) // 86400 + 1):
                self._by_day.setdefault(day, []).append(a)
        self._imported: dict[str, list[int]] = {}
        for sid, start, _i, _o, up in store.imported_counts(int(lo), int(hi)) or ():
            if up or not for_upload:
                self._imported.setdefault(sid, []).append(start)  # sorted by the query
        self._estimated: dict[str, list[int]] = {}
        if "m006_unplaced_pulses" not in store.pending_migrations:
            for sid, start in store.time_estimated_buckets(lo, hi):
                self._estimated.setdefault(sid, []).append(start)  # sorted by the query

    def flags(self, sensor_id: str, start: float, end: float) -> list[str]:
        """As :func:`flags_for` for one sensor's period [start, end) inside [lo, hi)."""
        kinds: set[str] = set()
        seen: set[int] = set()
        for day in range(int(start) // 86400, (int(end) - 1) // 86400 + 1):
            for a in self._by_day.get(day, ()):
                if a["id"] not in seen and a["start"] < end and a["end"] > start and (
                        a["sensor_id"] is None or a["sensor_id"] == sensor_id):
                    seen.add(a["id"])
                    kinds.add(a["kind"])
        starts = self._imported.get(sensor_id)
        if starts:
            k = bisect_left(starts, start)
            if k < len(starts) and starts[k] < end:
                kinds.add("imported")
        starts = self._estimated.get(sensor_id)
        if starts:
            k = bisect_right(starts, start - BUCKET_S)
            if k < len(starts) and starts[k] < end:
                kinds.add("time-estimated")
        return sorted(kinds)


def changed_ranges(store: Store, since: float) -> list[tuple[str | None, int, int]]:
    """(sensor_id or None for every sensor, start, end) of what staff changed after
    ``since``: annotations added or deleted (their flags), and imports made or undone
    (counts a ``--replace`` or ``--undo`` removed leave no ``updated_at`` behind).  For the
    uploader to look at those periods again."""
    out = store.staff_changes(since)
    return sorted(out, key=lambda x: (x[1], x[2], x[0] or ""))


# -- the command -------------------------------------------------------------------------------------
