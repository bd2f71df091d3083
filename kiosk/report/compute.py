"""``kiosk report``: visits per day, week, month or year in local time.

:func:`build_report` computes the figures as plain JSON-able data (the one place they are
computed: the table, CSV, JSON and HTML forms in :mod:`kiosk.report.text` and
:mod:`kiosk.report.html` only render them, and so can a dashboard).

Decisions a reader of the figures needs to know (they are also stated in the reports):

* **Visits** are entries (``in``) by default.  With ``in+out/2`` (single-beam sensors
  that cannot tell direction) every figure is computed from its own summed counts as
  (in + out) / 2 and rounded half up; a total is therefore not the sum of rounded rows
  and may differ from it by rounding, but the same span always gives the same total.
* **Counted time** is the union of the daemon's ``runs`` and the extents of imported rows
  (``import_rows``); a day with counts but neither (a database from before runs were
  recorded) is taken as counted whole.  Time outside it was *not counted*: its rows have
  ``visits: null`` (never 0) and a ``coverage`` (the counted fraction, 0-1).
* **Comparisons** (the first is the headline one):
  a day against the same weekday a week earlier (then the previous day), a week against
  the previous week (then the same ISO week a year earlier, 52 weeks back), a month
  against the same month a year earlier (then the previous month), a year against the
  previous year.  While a span is still running, the earlier span is cut at the same
  local time as the *last count* (not the wall clock).  When both parts were counted
  throughout they are compared whole (``like_for_like``).  Otherwise the change is
  computed over the 15-minute buckets counted (at least 90 %) in both, matched by local
  date and wall time (a month or a year back: the same day of the month); an imported
  row longer than a bucket is compared whole or not at all.  ``compared`` says what was
  compared; under half of the span's counted time (or under an hour) gives no change.
  Only a like-for-like comparison goes into the HTML headline.
* **Averages** per weekday (Mon–Fri) and weekend day (Sat–Sun) are taken over the
  completed days of the span that were counted in full.  Days a site-wide ``closed``
  annotation covers entirely are left out.  Public holidays are counted by their weekday.
  The **typical day** (week, month, year) averages each local hour of day over the
  completed days on which that hour was counted in full, weekdays and weekend days apart.
* **Rows** are local hours (a day: 23 rows on the spring DST day, 25 on the autumn one,
  each with its UTC offset), local days (week, month) or months (year), each with
  ``coverage``, ``imported`` and the ``notes`` (annotations) that touch it.

The figures come from SQL ``GROUP BY`` over the 15-minute ``counts``: the span is cut
into pieces of constant UTC offset (found with zoneinfo), and within each piece a bucket
belongs to local hour ``(start + offset) / 3600`` and local day ``(start + offset) / 86400``.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.exc import ExportError
from kiosk.periods import Counted, iso_local, local_midnight, utc_offset_s

if TYPE_CHECKING:  # SQLite loads only when a report runs (fast --help)
    from kiosk.store import Store
from kiosk.buckets import BUCKET_S

_Date = date  #: the type, for annotations inside build_report (its parameter ``date`` hides it)

SPANS = ("day", "week", "month", "year")
VISITS = ("in", "in+out/2")
FORMATS = ("table", "csv", "json", "html")
SITE = "(site)"  #: sensor_id of the site rows in CSV (not a valid sensor id).
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
DEFINITIONS = {
    "in": "Visits = entries: the 'in' counts of the sensors; exits are not counted.",
    "in+out/2": "Visits = (entries + exits) / 2, for sensors that cannot tell direction; each "
                "figure is computed from its own summed counts and rounded half up, so rows "
                "may differ from the total by rounding.",
}
#: Comparisons per span: (description, shift); the first is the headline comparison.
COMPARISONS: dict[str, list[tuple[str, dict[str, int]]]] = {
    "day": [("same weekday a week earlier", {"days": -7}), ("previous day", {"days": -1})],
    "week": [("previous week", {"days": -7}), ("same week a year earlier", {"days": -364})],
    "month": [("same month a year earlier", {"months": -12}), ("previous month", {"months": -1})],
    "year": [("previous year", {"months": -12})],
}
_EPOCH = date(1970, 1, 1).toordinal()


# -- dates, spans and labels -----------------------------------------------------------------

def fmt_date(d: date) -> str:
    return f"{d.day}.{d.month}.{d.year}"


def day_label(d: date) -> str:
    """``Tuesday 24.11.2026``."""
    return f"{WEEKDAYS[d.weekday()]} {fmt_date(d)}"


def span_dates(span: str, d: date) -> tuple[date, date]:
    """First local date of the span holding ``d`` and the first date after it."""
    if span == "day":
        return d, d + timedelta(days=1)
    if span == "week":
        first = d - timedelta(days=d.weekday())
        return first, first + timedelta(days=7)
    if span == "month":
        first = d.replace(day=1)
        return first, _shift_date(first, months=1)
    if span == "year":
        return date(d.year, 1, 1), date(d.year + 1, 1, 1)
    raise ExportError(f"unknown span {span!r}; expected one of {', '.join(SPANS)}")


def span_label(span: str, first: date) -> str:
    if span == "day":
        return day_label(first)
    if span == "week":
        year, week, _ = first.isocalendar()
        last = first + timedelta(days=6)
        lead = (f"{first.day}.{first.month}." if first.year == last.year else fmt_date(first))
        return f"week {week}/{year} ({lead}–{fmt_date(last)})"
    if span == "month":
        return f"{MONTHS[first.month - 1]} {first.year}"
    return str(first.year)


def span_key(span: str, first: date) -> str:
    """A file-name friendly key: 2026-11-24, 2026-W48, 2026-11, 2019."""
    if span == "week":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    return {"day": first.isoformat(), "month": first.isoformat()[:7], "year": str(first.year)}[span]


def _shift_date(d: date, *, days: int = 0, months: int = 0) -> date:
    if months:
        m = d.year * 12 + d.month - 1 + months
        y, m = divmod(m, 12)
        nxt = date(y + (m + 1) // 12, (m + 1) % 12 + 1, 1)
        d = date(y, m + 1, min(d.day, (nxt - timedelta(days=1)).day))
    return d + timedelta(days=days)


def _shift_dt(dt: datetime, **shift: int) -> datetime:
    return datetime.combine(_shift_date(dt.date(), **shift), dt.time())


def parse_report_date(text: str | None, span: str, tz: ZoneInfo, *, now: float) -> date:
    """A date inside the wanted span: ``2026-11-24``, ``2026-11`` (month, year), ``2026``
    (year), ``2026-W48`` (week), ``today`` or ``yesterday`` (the default is today)."""
    today = datetime.fromtimestamp(now, tz).date()
    t = (text or "today").strip().lower()
    if t in ("today", "yesterday"):
        return today - timedelta(days=t == "yesterday")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            return date.fromisoformat(t)
        if m := re.fullmatch(r"(\d{4})-(\d{1,2})", t):
            if span in ("month", "year"):
                return date(int(m[1]), int(m[2]), 1)
        elif m := re.fullmatch(r"(\d{4})-?w(\d{1,2})", t):
            if span == "week":
                return date.fromisocalendar(int(m[1]), int(m[2]), 1)
        elif re.fullmatch(r"\d{4}", t):
            if span == "year":
                return date(int(t), 1, 1)
        else:
            raise ValueError("unknown form")
    except ValueError as e:
        raise ExportError(f"invalid date {text!r} ({e}); use e.g. 2026-11-24, 2026-11, 2026, "
                          f"2026-W48, today or yesterday") from None
    raise ExportError(f"date {text!r} does not name one {span}; give a day inside it, e.g. "
                      f"{today.isoformat()}")


def offset_label(seconds: float) -> str:
    """``+03:00``."""
    s = int(seconds)
    sign = "-" if s < 0 else "+"
    h, m = divmod(abs(s) // 60, 60)
    return f"{sign}{h:02d}:{m:02d}"


def _offset(ts: float, tz: ZoneInfo) -> int:
    return utc_offset_s(ts, tz)


# -- reading the database --------------------------------------------------------------------

class _Reader:
    """The database side (SQL in kiosk.store.counts): sums per (sensor, local day) or
    (sensor, local hour slot)."""

    def __init__(self, store: Store, sensors: Sequence[str], visits: str, tz: ZoneInfo) -> None:
        self.store, self.sensors, self.tz = store, list(sensors), tz
        self.visits_kind = visits  #: ``in`` or ``in+out/2``: what the SQL sums (units)
        self.div = 1 if visits == "in" else 2
        self.in_out = [0, 0]

    def intervals(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """[a, b) pieces of [lo, hi) with one UTC offset each (cut at bucket starts)."""
        out: list[list[int]] = []
        t = lo
        while t < hi:
            off = _offset(t, self.tz)
            end = min(hi, int(datetime.fromtimestamp(t, self.tz).date().toordinal() - _EPOCH + 1)
                      * 86400 - off)  # next local midnight if the offset stays
            end = max(end, t + BUCKET_S)
            if end < hi and _offset(end - 1, self.tz) != off:
                a, b = t // BUCKET_S, -(-end // BUCKET_S)  # first bucket start with a new offset
                while b - a > 1:
                    mid = (a + b) // 2
                    a, b = (mid, b) if _offset(mid * BUCKET_S, self.tz) == off else (a, mid)
                end = b * BUCKET_S
            end = min(end, hi)
            if out and out[-1][2] == off and out[-1][1] == t:
                out[-1][1] = end
            else:
                out.append([t, end, off])
            t = end
        return [(a, b, off) for a, b, off in out]

    def by_day(self, lo: int, hi: int) -> tuple[dict[tuple[str, date], int], dict[date, int]]:
        """Units per (sensor, local date) and bucket rows per local date in [lo, hi)."""
        units: dict[tuple[str, date], int] = {}
        rows: dict[date, int] = {}
        self.in_out = [0, 0]  # raw in and out of the last call, for the record
        if not self.sensors:
            return units, rows
        for a, b, off in self.intervals(lo, hi):
            for sid, ld, u, i, o, n in self.store.sums_by_local_day(
                    self.visits_kind, self.sensors, a, b, off):
                d = date.fromordinal(_EPOCH + ld)
                units[sid, d] = units.get((sid, d), 0) + int(u)
                rows[d] = rows.get(d, 0) + n
                self.in_out[0] += int(i)
                self.in_out[1] += int(o)
        return units, rows

    def by_hour(self, lo: int, hi: int) -> tuple[dict[tuple[str, int], int], dict[int, int]]:
        """Units per (sensor, UTC start of its local hour slot) and rows per slot."""
        units: dict[tuple[str, int], int] = {}
        rows: dict[int, int] = {}
        if not self.sensors:
            return units, rows
        for a, b, off in self.intervals(lo, hi):
            for sid, lh, u, n in self.store.sums_by_local_hour(
                    self.visits_kind, self.sensors, a, b, off):
                slot = max(a, lh * 3600 - off)
                units[sid, slot] = units.get((sid, slot), 0) + int(u)
                rows[slot] = rows.get(slot, 0) + n
        return units, rows

    def busiest_hour(self, lo: int, hi: int) -> tuple[int, int] | None:
        """(UTC start of the local hour slot, units) with the most site visits; earliest wins."""
        if not self.sensors:
            return None
        best: tuple[int, int] | None = None
        for a, b, off in self.intervals(lo, hi):
            row = self.store.busiest_local_hour(self.visits_kind, self.sensors, a, b, off)
            if row and row[1] and (best is None or row[1] > best[1]):
                best = (max(a, row[0] * 3600 - off), int(row[1]))
        return best

    def visits(self, units: int) -> int:
        """Units to visits, rounded half up."""
        return (2 * units + self.div) // (2 * self.div)


def _annotations(store: Store, lo: float, hi: float, sensors: Sequence[str],
                 tz: ZoneInfo) -> list[dict[str, Any]]:
    """Rows of the ``annotations`` table (if there is one) overlapping [lo, hi)."""
    out = []
    for r in store.annotation_rows():
        if r.get("deleted_at") is not None:  # withdrawn annotations are kept, not shown
            continue
        start, end = _when(r.get("start"), tz), _when(r.get("end"), tz)
        if start is None:
            continue
        if end is None or end < start:
            end = start
        sid = r.get("sensor_id") or None
        if sid is not None and sid not in sensors:
            continue
        if start < hi and (end > lo or start == end >= lo):
            out.append({"id": r.get("id"), "start": iso_local(start, tz), "end": iso_local(end, tz),
                        "sensor_id": sid, "kind": r.get("kind") or "note",
                        "note": r.get("note") or "", "_start": start, "_end": end})
    return sorted(out, key=lambda a: (a["_start"], a["_end"]))


def _when(value: Any, tz: ZoneInfo) -> float | None:
    """UTC seconds from a number, a numeric string, a local date or an ISO time."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return float(local_midnight(date.fromisoformat(text), tz))
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp()


# -- counted time ---------------------------------------------------------------------------------

COUNTED_BUCKET = 0.9  #: a 15-minute bucket is "counted" when at least this fraction of it was
FULL = 0.99           #: a row or span is "fully counted" from this fraction on
MIN_OVERLAP = 0.5     #: a change needs this share of the span's counted time counted on both sides
MIN_OVERLAP_BUCKETS = 4  #: ... and at least one hour of it


def _counted(store: Store, q: _Reader, lo: int, hi: int, tz: ZoneInfo) -> Counted:
    """The counted time in [lo, hi): runs and imported rows; a local day that has counts but
    neither (a database from before runs were recorded) is taken as counted whole."""
    c = Counted.load(store, lo, hi, q.sensors)
    _units, rows = q.by_day(lo, hi) if hi > lo else ({}, {})
    extra = []
    for d in rows:
        s, e = local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)
        if c.fraction(s, e) == 0:
            extra.append((float(s), float(e)))
    return Counted([*c.intervals(), *extra]) if extra else c


def _counted_buckets(c: Counted, lo: int, hi: int) -> set[int]:
    """Starts of the buckets in [lo, hi) counted for at least :data:`COUNTED_BUCKET` of them."""
    cov: dict[int, float] = {}
    for a, b in c.intervals():
        a, b = max(a, lo), min(b, hi)
        t = int(a // BUCKET_S * BUCKET_S)
        while t < b:
            cov[t] = cov.get(t, 0.0) + min(b, t + BUCKET_S) - max(a, t)
            t += BUCKET_S
    return {t for t, v in cov.items() if v >= COUNTED_BUCKET * BUCKET_S}


@dataclass(frozen=True, slots=True)
class SlotKey:
    """A bucket in local terms: its local date and wall time (``fold`` 1: the repeated hour
    of the autumn DST change)."""

    day: date
    hour: int
    minute: int
    fold: int


@dataclass
class Side:
    """The 15-minute buckets of one span part [lo, hi): units (site and per sensor), which
    were counted, imported rows longer than a bucket (``blocks``) and their local keys."""

    lo: int
    hi: int
    units: dict[int, int]
    sensor_units: dict[str, dict[int, int]]
    counted: set[int]
    blocks: list[tuple[int, int]]
    keys: dict[int, SlotKey]

    @property
    def elapsed(self) -> int:
        """Buckets in the part."""
        return max(0, (self.hi - self.lo) // BUCKET_S)

    def resolvable(self, start: int, end: int) -> bool:
        """True if no imported row crosses the edges of [start, end): its figure is known."""
        return not any(a < end and b > start and (a < start or b > end) for a, b in self.blocks)


def _side(store: Store, q: _Reader, lo: int, hi: int, tz: ZoneInfo, counted: Counted) -> Side:
    units: dict[int, int] = {}
    per: dict[str, dict[int, int]] = {s: {} for s in q.sensors}
    if hi > lo and q.sensors:
        for sid, t, i, o in store.buckets(lo, hi, q.sensors):
            u = i if q.visits_kind == "in" else i + o
            units[t] = units.get(t, 0) + u
            per[sid][t] = u
    blocks = sorted({(a, b) for _s, a, b in store.import_extents(lo, hi, q.sensors)
                     if b - a > BUCKET_S})
    keys = {}
    for t in range(lo, hi, BUCKET_S):
        dt = datetime.fromtimestamp(t, tz)
        keys[t] = SlotKey(dt.date(), dt.hour, dt.minute, dt.fold)
    return Side(lo, hi, units, per, _counted_buckets(counted, lo, hi), blocks, keys)


def _counterpart(d: date, shift: dict[str, int]) -> date | None:
    """The day of the earlier span matching ``d`` (the same day of the month a month or a
    year back; None when that month has no such day)."""
    if "months" in shift:
        m = d.year * 12 + d.month - 1 + shift["months"]
        try:
            return date(m // 12, m % 12 + 1, d.day)
        except ValueError:
            return None
    return d + timedelta(days=shift.get("days", 0))


def _pairs(cur: Side, prev: Side, shift: dict[str, int]) -> dict[int, int]:
    """Buckets counted in both spans: current start -> earlier start, the same local time of
    the matching day; an imported row longer than a bucket is kept whole or left out."""
    index = {k: t for t, k in prev.keys.items()}
    mapped: dict[int, int] = {}  # every current bucket that has a counterpart
    for t, k in cur.keys.items():
        d = _counterpart(k.day, shift)
        pt = index.get(SlotKey(d, k.hour, k.minute, k.fold)) if d else None
        if pt is not None:
            mapped[t] = pt
    pairs = {t: pt for t, pt in mapped.items() if t in cur.counted and pt in prev.counted}
    domains = (set(mapped), set(mapped.values()))
    changed = True
    while changed:
        changed = False
        inverse = {pt: t for t, pt in pairs.items()}
        for side, member_of, domain in ((cur, pairs, domains[0]), (prev, inverse, domains[1])):
            for a, b in side.blocks:
                members = [m for m in range(a, b, BUCKET_S) if m in domain]
                inside = [m for m in members if m in member_of]
                cut_off = a < side.lo or b > side.hi  # the part has only a piece of its total
                if inside and (len(inside) < len(members) or cut_off):
                    for m in inside:
                        pairs.pop(m if side is cur else inverse[m], None)
                    changed = True
            if changed:
                break
    return pairs


def _runs_of(starts: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted bucket starts merged into [start, end) runs."""
    out: list[list[int]] = []
    for t in sorted(starts):
        if out and out[-1][1] == t:
            out[-1][1] = t + BUCKET_S
        else:
            out.append([t, t + BUCKET_S])
    return [(a, b) for a, b in out]


def _clock(ts: int, tz: ZoneInfo, day: date) -> str:
    """``16:30``; ``24:00`` for the midnight ending ``day``."""
    dt = datetime.fromtimestamp(ts, tz)
    return "24:00" if dt.date() > day and dt.hour == 0 and dt.minute == 0 else f"{dt:%H:%M}"


def _short_day(d: date) -> str:
    """``Tue 1.12.``"""
    return f"{WEEKDAYS[d.weekday()][:3]} {d.day}.{d.month}."


def compared_text(span: str, runs: list[tuple[int, int]], tz: ZoneInfo) -> str:
    """The compared part of the current span in words: ``Tue 1.12. 16:30–20:00``,
    ``1.1.–7.2.2026 (38 days)``."""
    if not runs:
        return "nothing"
    pieces = []
    for a, b in runs:
        s, e = datetime.fromtimestamp(a, tz), datetime.fromtimestamp(b, tz)
        last = (e - timedelta(seconds=1)).date()
        whole = s.time() == e.time() == datetime.min.time()
        if span == "day":
            pieces.append(f"{s:%H:%M}–{_clock(b, tz, s.date())}")
        elif whole:
            pieces.append(f"{s.day}.{s.month}." + ("" if last == s.date() else f"–{last.day}.{last.month}."))
        else:
            pieces.append(f"{_short_day(s.date())} {s:%H:%M}–"
                          + (f"{_clock(b, tz, s.date())}" if last == s.date()
                             else f"{_short_day(last)} {_clock(b, tz, last)}"))
    first = datetime.fromtimestamp(runs[0][0], tz).date()
    if span == "day":
        return f"{_short_day(first)} " + ", ".join(pieces)
    hours = sum(b - a for a, b in runs) / 3600
    size = f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.0f} hours"
    if len(pieces) > 3:
        lastd = datetime.fromtimestamp(runs[-1][1] - 1, tz).date()
        return f"{size} between {fmt_date(first)} and {fmt_date(lastd)} ({len(pieces)} pieces)"
    return ", ".join(pieces) + f" ({size})"


def _compare(store: Store, q: _Reader, span: str, first: date, cur: Side, cur_label: str,
             desc: str, shift: dict[str, int], in_progress: bool, tz: ZoneInfo) -> dict[str, Any]:
    """The change against one earlier span, over the time both were counted."""
    pfirst, pafter = span_dates(span, _shift_date(first, **shift))
    plo, phi = local_midnight(pfirst, tz), local_midnight(pafter, tz)
    cut = phi
    if in_progress:  # cut the earlier span at the same local time as the last count
        local = _shift_dt(datetime.fromtimestamp(cur.hi, tz).replace(tzinfo=None), **shift)
        cut = int(min(phi, max(plo, local.replace(tzinfo=tz).timestamp())))
        cut -= cut % BUCKET_S
    prev = _side(store, q, plo, cut, tz, _counted(store, q, plo, cut, tz))
    plabel = span_label(span, pfirst)
    out: dict[str, Any] = {
        "description": desc, "label": plabel, "start": iso_local(plo, tz), "end": iso_local(phi, tz),
        "until": iso_local(cut, tz), "partial": cut < phi,
        "visits": None, "current_visits": None, "change": None, "change_pct": None,
        "by_sensor": {s: None for s in q.sensors}, "compared": None, "compared_hours": 0.0,
        "like_for_like": False, "reason": None,
        "days": sum(local_midnight(pfirst + timedelta(days=k), tz) < cut
                    for k in range((pafter - pfirst).days)),
        "days_with_data": len({prev.keys[t].day for t in prev.counted}),
    }
    if not prev.counted:
        out["reason"] = "no counts"
        return out
    if not cur.counted:
        out["reason"] = f"nothing counted in {cur_label}"
        return out
    full = len(cur.counted) >= FULL * cur.elapsed and len(prev.counted) >= FULL * prev.elapsed
    if full:  # both parts counted throughout: the whole parts, whatever their lengths
        cur_b, prev_b = list(cur.units), list(prev.units)
        compared = f"{cur_label}" + (" so far" if in_progress else "")
        hours = cur.elapsed * BUCKET_S / 3600
    else:
        pairs = _pairs(cur, prev, shift)
        cur_b, prev_b = list(pairs), list(pairs.values())
        hours = len(pairs) * BUCKET_S / 3600
        what = "hours" if span == "day" else "days" if all(
            (b - a) % 86400 == 0 for a, b in _runs_of(cur_b)) else "times"
        compared = f"{compared_text(span, _runs_of(cur_b), tz)}"
        plab = (_short_day(pfirst) if span == "day" else plabel)
        compared += f" against the same {what} of {plab}"
        if len(pairs) < max(MIN_OVERLAP_BUCKETS, MIN_OVERLAP * len(cur.counted)):
            counted_prev = compared_text(span, _runs_of(prev.counted), tz)
            out.update(compared=compared if pairs else None, compared_hours=hours,
                       reason=f"too little overlap: {plabel} was counted {counted_prev}"
                              + (f", {cur_label} {compared_text(span, _runs_of(cur.counted), tz)}"
                                 if span == "day" else ""))
            return out
    cu = sum(cur.units.get(t, 0) for t in cur_b)
    pu = sum(prev.units.get(t, 0) for t in prev_b)
    out.update(visits=q.visits(pu), current_visits=q.visits(cu), compared=compared,
               compared_hours=round(hours, 2), like_for_like=full,
               by_sensor={s: q.visits(sum(prev.sensor_units[s].get(t, 0) for t in prev_b))
                          for s in q.sensors})
    out["change"] = out["current_visits"] - out["visits"]
    out["change_pct"] = round((cu - pu) * 100 / pu, 1) if pu else None
    if not pu:
        out["reason"] = "no visits in the earlier span"
    return out


# -- the report -----------------------------------------------------------------------------------

def build_report(store: Store, *, span: str, date: date, tz: ZoneInfo, visits: str = "in",
                 sensors: list[str] | None = None, now: float | None = None,
                 site: str | None = None) -> dict[str, Any]:
    """The report of the ``span`` (day, week, month, year) holding local ``date``.

    ``now`` (UTC seconds, default the current time; the CLI gives
    :func:`kiosk.status.store_now`) decides whether the span is still running: then
    figures stop at ``now`` and comparisons use the same part of the earlier span, up to
    the last counted moment.  Returns plain JSON-able data (see the module docstring for
    the rules) that the table, CSV, JSON and HTML forms render.
    """
    if span not in SPANS:
        raise ExportError(f"unknown span {span!r}; expected one of {', '.join(SPANS)}")
    if visits not in VISITS:
        raise ExportError(f"unknown visits definition {visits!r}; expected 'in' or 'in+out/2'")
    now = _time.time() if now is None else float(now)
    known = store.sensor_ids()
    if sensors:
        unknown = sorted(set(sensors) - set(known))
        if unknown:
            raise ExportError(f"no counts for sensor {', '.join(unknown)}; known sensors: "
                              f"{', '.join(known) or 'none yet'}")
    sensor_ids = sorted(set(sensors)) if sensors else known
    q = _Reader(store, sensor_ids, visits, tz)
    first, after = span_dates(span, date)
    lo, hi = local_midnight(first, tz), local_midnight(after, tz)
    end = int(min(hi, max(lo, now)))  # figures stop at the present
    days = [first + timedelta(days=i) for i in range((after - first).days)]
    bounds = {d: (local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)) for d in days}
    counted = _counted(store, q, lo, end, tz) if end > lo else Counted([])
    imported = Counted((a, b) for _s, a, b in store.import_extents(lo, end, sensor_ids))
    in_progress = lo <= now < hi
    last = counted.last_before(end)
    until = end if not in_progress else int(max(lo, min(end, last if last is not None else lo)))
    annotations = _annotations(store, lo, hi, sensor_ids, tz)
    day_units, day_rows = q.by_day(lo, end)
    in_out = q.in_out

    def day_has_data(d: _Date) -> bool:
        s, e = bounds[d]
        return s < end and (day_rows.get(d, 0) > 0 or counted.fraction(s, min(e, end)) > 0)

    with_data = [d for d in days if day_has_data(d)]
    per_sensor = {sid: sum(day_units.get((sid, d), 0) for d in days) for sid in sensor_ids}
    total_units = sum(per_sensor.values())
    cur = _side(store, q, lo, until - until % BUCKET_S if in_progress else until, tz, counted)
    extras = {"counted": counted, "imported": imported, "annotations": annotations,
              "now": now, "side": cur}

    if span == "day":
        rows = _hour_rows(q, lo, hi, end, tz, extras)
        unit = "hour"
    elif span in ("week", "month"):
        rows = [_row(q, day_label(d)[:3] + f" {d.day}.{d.month}.", *bounds[d], tz,
                     {s: day_units.get((s, d), 0) for s in sensor_ids}, day_has_data(d), extras,
                     date=d.isoformat(), weekday=WEEKDAYS[d.weekday()]) for d in days]
        unit = "day"
    else:
        rows = []
        for m in range(1, 13):
            mdays = [d for d in days if d.month == m]
            s, e = bounds[mdays[0]][0], bounds[mdays[-1]][1]
            rows.append(_row(q, MONTHS[m - 1], s, e, tz,
                             {sid: sum(day_units.get((sid, d), 0) for d in mdays)
                              for sid in sensor_ids},
                             any(d in with_data for d in mdays), extras,
                             month=f"{first.year}-{m:02d}",
                             days_with_data=sum(d in with_data for d in mdays)))
        unit = "month"

    closed = _closed_days(annotations, bounds)
    complete = [d for d in with_data if bounds[d][1] <= now and d not in closed]
    full_days = [d for d in complete if counted.fraction(*bounds[d]) >= FULL
                 and cur.resolvable(*bounds[d])]
    partial_days = sorted(set(complete) - set(full_days))
    site_day = {d: sum(day_units.get((s, d), 0) for s in sensor_ids) for d in days}

    def average(ds: list[_Date]) -> dict[str, Any]:
        n = len(ds)
        u = sum(site_day[d] for d in ds)
        return {"visits": (2 * u + q.div * n) // (2 * q.div * n) if n else None, "days": n}

    averages = {
        "weekday": average([d for d in full_days if d.weekday() < 5]),
        "weekend": average([d for d in full_days if d.weekday() >= 5]),
        "all_days": average(full_days),
        "by_weekday": {WEEKDAYS[w]: average([d for d in full_days if d.weekday() == w])
                       for w in range(7)},
        "excluded_closed_days": sorted(d.isoformat() for d in closed if d in with_data),
        "excluded_partly_counted_days": [d.isoformat() for d in partial_days],
    }
    typical = (_typical_day(q, cur, [d for d in complete], bounds, tz)
               if span != "day" else None)
    busiest_day = None
    if full_days and max(site_day[d] for d in full_days) > 0:
        d = max(full_days, key=lambda d: (site_day[d], -d.toordinal()))
        busiest_day = {"date": d.isoformat(), "label": day_label(d), "visits": q.visits(site_day[d])}
    if span == "day":
        cands = [(r["_units"], -r["_start"]) for r in rows if r["_units"]]
        best = (-max(cands)[1], max(cands)[0]) if cands else None
    else:
        best = q.busiest_hour(lo, end) if end > lo else None
    busiest_hour = _hour_info(best[0], best[1], q, tz) if best else None

    label = span_label(span, first)
    comparisons = [_compare(store, q, span, first, cur, _short_day(first) if span == "day" else label,
                            desc, shift, in_progress, tz)
                   for desc, shift in COMPARISONS[span]]
    report: dict[str, Any] = {
        "report": "kiosk visitor report", "version": 2,
        "site": site, "span": span, "key": span_key(span, first),
        "label": label, "timezone": str(tz.key),
        "first_day": first.isoformat(), "last_day": days[-1].isoformat(),
        "start": iso_local(lo, tz), "end": iso_local(hi, tz),
        "until": iso_local(until, tz), "in_progress": in_progress, "not_started": now < lo,
        "last_counted": iso_local(last, tz) if last is not None else None,
        "generated_at": iso_local(now, tz),
        "visits": visits, "definition": DEFINITIONS[visits],
        "sensors": sensor_ids, "row_unit": unit,
        "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "has_data": bool(with_data),
        "coverage": round(counted.fraction(lo, end), 4) if end > lo else 0.0,
        "imported": bool(imported.starts),
        "totals": {"visits": q.visits(total_units) if with_data else 0,
                   "by_sensor": {s: q.visits(u) for s, u in per_sensor.items()},
                   "in": in_out[0], "out": in_out[1]},
        "days": sum(bounds[d][0] < end for d in days), "days_with_data": len(with_data),
        "days_fully_counted": len([d for d in days if bounds[d][1] <= end
                                   and counted.fraction(*bounds[d]) >= FULL]),
        "comparison": comparisons[0], "comparisons": comparisons,
        "averages": averages, "typical_day": typical,
        "busiest_day": busiest_day, "busiest_hour": busiest_hour,
        "annotations": [{k: v for k, v in a.items() if not k.startswith("_")} for a in annotations],
    }
    report["notes"] = _notes(report, rows, now, tz)
    return report


def _row(q: _Reader, label: str, start: int, end: int, tz: ZoneInfo, units: dict[str, int],
         has_data: bool, extras: dict[str, Any], **more: Any) -> dict[str, Any]:
    """One row: visits (None: not counted), the counted fraction, imported, annotations."""
    counted, imported, now = extras["counted"], extras["imported"], extras["now"]
    cur: Side = extras["side"]
    elapsed_end = min(end, int(now))
    cov = counted.fraction(start, elapsed_end) if elapsed_end > start else 0.0
    known = has_data and cur.resolvable(start, end)
    site_units = sum(units.values())
    notes = [f"{a['kind']}" + (f" [{a['sensor_id']}]" if a["sensor_id"] else "") + f": {a['note']}"
             for a in extras["annotations"]
             if a["_start"] < end and (a["_end"] > start or a["_start"] == a["_end"] >= start)]
    blocks = [(a, b) for a, b in cur.blocks if a < end and b > start and (a < start or b > end)]
    if has_data and blocks:
        a, b = blocks[0]
        first_day = datetime.fromtimestamp(a, tz).date()
        notes.insert(0, f"imported as one total for {short_when(iso_local(a, tz))}–"
                        f"{_clock(b, tz, first_day)}" if b - a <= 86400 else
                        f"imported as one total for {short_when(iso_local(a, tz))} – "
                        f"{short_when(iso_local(b, tz))}")
    return {"label": label, "start": iso_local(start, tz), "end": iso_local(end, tz), **more,
            "visits": q.visits(site_units) if known else None,
            "by_sensor": {s: (q.visits(u) if known else None) for s, u in units.items()},
            "has_data": known,
            "coverage": round(cov, 4),
            "future": start >= now,
            "imported": imported.fraction(start, end) > 0,
            "notes": notes,
            "_start": start, "_units": site_units if known else 0}


def _hour_rows(q: _Reader, lo: int, hi: int, end: int, tz: ZoneInfo,
               extras: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per local hour of the day [lo, hi): 23, 24 or 25 of them."""
    units, nrows = q.by_hour(lo, end)
    counted: Counted = extras["counted"]
    cuts = [a for a, _b, _o in q.intervals(lo, hi)][1:]
    out = []
    t = lo
    while t < hi:
        off = _offset(t, tz)
        e = ((t + off) // 3600 + 1) * 3600 - off
        e = min([e, hi, *(c for c in cuts if c > t)])
        has = t < end and (counted.fraction(t, min(e, end)) > 0 or nrows.get(t, 0) > 0)
        local = datetime.fromtimestamp(t, tz)
        out.append(_row(q, f"{local:%H:%M} {offset_label(off)}", t, e, tz,
                        {s: units.get((s, t), 0) for s in q.sensors}, has, extras,
                        utc_offset=offset_label(off), hour=local.hour))
        t = e
    return out


def _typical_day(q: _Reader, cur: Side, days: list[date], bounds: dict[date, tuple[int, int]],
                 tz: ZoneInfo) -> dict[str, Any]:
    """Average visits by local hour of day over the completed days (closed days left out),
    weekdays and weekend days apart; an hour counts on a day when all of it was counted."""
    acc = {"weekday": [[0, 0] for _ in range(24)], "weekend": [[0, 0] for _ in range(24)]}
    for d in days:
        kind = "weekday" if d.weekday() < 5 else "weekend"
        s, e = bounds[d]
        t = s
        while t < e:
            k = cur.keys.get(t)
            if k is None:
                break
            hour = [b for b in range(t, min(e, t + 3600), BUCKET_S) if cur.keys.get(b) is not None
                    and cur.keys[b].hour == k.hour and cur.keys[b].fold == k.fold]
            if all(b in cur.counted for b in hour) and len(hour) == 4 \
                    and cur.resolvable(hour[0], hour[-1] + BUCKET_S):
                acc[kind][k.hour][0] += sum(cur.units.get(b, 0) for b in hour)
                acc[kind][k.hour][1] += 1
            t = hour[-1] + BUCKET_S if hour else t + BUCKET_S
    out: dict[str, Any] = {}
    for kind, hours in acc.items():
        out[kind] = [{"hour": h, "visits": (2 * u + q.div * n) // (2 * q.div * n) if n else None,
                      "days": n} for h, (u, n) in enumerate(hours)]
    return out


def _hour_info(start: int, units: int, q: _Reader, tz: ZoneInfo) -> dict[str, Any]:
    s = datetime.fromtimestamp(start, tz)
    e = datetime.fromtimestamp(start + 3600, tz)
    wall_end = s.replace(tzinfo=None) + timedelta(hours=1)  # 03:00–04:00 even when clocks turn
    off = offset_label(utc_offset_s(start, tz))
    return {"start": s.isoformat(), "end": e.isoformat(), "visits": q.visits(units),
            "label": f"{day_label(s.date())} {s:%H:%M}–{wall_end:%H:%M} ({off})"}


def _closed_days(annotations: list[dict[str, Any]], bounds: dict[date, tuple[int, int]]) -> set[date]:
    """Days a site-wide ``closed`` annotation covers from midnight to midnight."""
    return {d for d, (s, e) in bounds.items()
            for a in annotations
            if a["kind"] == "closed" and a["sensor_id"] is None and a["_start"] <= s and a["_end"] >= e}


def _notes(r: dict[str, Any], rows: list[dict[str, Any]], now: float, tz: ZoneInfo) -> list[str]:
    notes = []
    if r["not_started"]:
        notes.append(f"This {r['span']} has not started yet: no counts.")
    elif not r["has_data"]:
        notes.append(f"No counts for {r['label']}: the counter was not running and nothing "
                     f"was imported for this {r['span']}.")
    if r["in_progress"] and r["has_data"]:
        stale = r["last_counted"] and now - datetime.fromisoformat(r["last_counted"]).timestamp() > 3600
        notes.append(f"In progress: counted until {short_when(r['until'])}"
                     + ("; the counter has not counted since" if stale else "")
                     + f"; comparisons use the same part of the earlier {r['span']}.")
    if r["span"] == "day" and len(rows) != 24:
        notes.append(f"Clocks changed this day (UTC{rows[0]['utc_offset']} → "
                     f"UTC{rows[-1]['utc_offset']}): {len(rows)} hours.")
    uncounted = [x for x in rows if not x["has_data"] and not x["coverage"] and not x["future"]]
    partly = [x for x in rows if x["has_data"] and x["coverage"] < FULL and not x["future"]
              and datetime.fromisoformat(x["end"]).timestamp() <= now]
    if r["has_data"] and (uncounted or partly):
        what = {"hour": "hours", "day": "days", "month": "months"}[r["row_unit"]]
        notes.append(f"Not counted: {len(uncounted)} {what} (shown as –, not 0)"
                     + (f"; partly counted: {len(partly)} (their share counted is shown)"
                        if partly else "") + ".")
    a = r["averages"]
    left = len(a["excluded_partly_counted_days"])
    if left and r["span"] != "day":
        notes.append(f"{left} partly counted day(s) left out of the averages.")
    if r["imported"]:
        notes.append("Includes imported history (kiosk import): rows marked 'imported'.")
    for c in r["comparisons"]:
        if c["reason"] and c["reason"].startswith("too little"):
            notes.append(f"No change against the {c['description']}: {c['reason']}.")
    if a["excluded_closed_days"]:
        notes.append(f"{len(a['excluded_closed_days'])} closed day(s) left out of the averages.")
    return notes


def short_when(iso: str) -> str:
    """``Tuesday 24.11.2026 10:00`` from a local ISO time."""
    dt = datetime.fromisoformat(iso)
    return f"{day_label(dt.date())} {dt:%H:%M}"
