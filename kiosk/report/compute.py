"""``kiosk report``: visits per day, week, month or year in local time.

:func:`build_report` computes a JSON-able dict; :func:`render_table`, :func:`render_csv`,
:func:`render_json` and :func:`render_html` turn it into text.

Decisions a reader of the figures needs to know (they are also stated in the reports):

* **Visits** are entries (``in``) by default.  With ``in+out/2`` (single-beam sensors
  that cannot tell direction) every figure is computed from its own summed counts as
  (in + out) / 2 and rounded half up; a total is therefore not the sum of rounded rows
  and may differ from it by rounding, but the same span always gives the same total.
* **Comparisons** (the first is the headline one):
  a day against the same weekday a week earlier (then the previous day), a week against
  the previous week (then the same ISO week a year earlier, 52 weeks back), a month
  against the same month a year earlier (then the previous month), a year against the
  previous year.  While a span is still running, the earlier span is cut at the same
  local time, so "this year so far" is compared with "last year until the same date".
* **Averages** per weekday (Mon–Fri) and weekend day (Sat–Sun) are taken over the
  completed days of the span that have data: the counter was running (``runs``) or counts
  exist (imported history).  Days a site-wide ``closed`` annotation covers entirely are
  left out.  Public holidays are counted by their weekday.
* **Rows** are local hours (a day: 23 rows on the spring DST day, 25 on the autumn one,
  each with its UTC offset), local days (week, month) or months (year).  A row without
  data (counter off, no counts) has ``visits: null``, told apart from a counted zero.

The figures come from SQL ``GROUP BY`` over the 15-minute ``counts``: the span is cut
into pieces of constant UTC offset (found with zoneinfo), and within each piece a bucket
belongs to local hour ``(start + offset) / 3600`` and local day ``(start + offset) / 86400``.
"""

from __future__ import annotations

import bisect
import re
import time as _time
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.exc import ExportError
from kiosk.periods import iso_local, local_midnight, utc_offset_s

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


class _Coverage:
    """How much of an interval the counter was running (union of ``runs``)."""

    def __init__(self, runs: Sequence[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for a, b in sorted(runs):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            elif b > a:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    def __call__(self, start: float, end: float) -> float:
        covered = 0.0
        i = bisect.bisect_right(self.ends, start)
        while i < len(self.starts) and self.starts[i] < end:
            covered += min(end, self.ends[i]) - max(start, self.starts[i])
            i += 1
        return covered / (end - start) if end > start else 0.0


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


# -- the report -------------------------------------------------------------------------------

def build_report(store: Store, *, span: str, date: date, tz: ZoneInfo, visits: str = "in",
                 sensors: list[str] | None = None, now: float | None = None,
                 site: str | None = None) -> dict[str, Any]:
    """The report of the ``span`` (day, week, month, year) holding local ``date``.

    ``now`` (UTC seconds, default the current time) decides whether the span is still
    running: then figures stop at ``now`` and comparisons use the same part of the
    earlier span.  Returns a JSON-able dict (see the module docstring for the rules).
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
    until = int(min(hi, max(lo, now)))
    days = [first + timedelta(days=i) for i in range((after - first).days)]
    bounds = {d: (local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)) for d in days}
    cover = _Coverage(store.runs(lo, hi))
    runs_recorded = bool(cover.starts)
    annotations = _annotations(store, lo, hi, sensor_ids, tz)
    day_units, day_rows = q.by_day(lo, until)

    def day_has_data(d: _Date) -> bool:
        s, e = bounds[d]
        return s < until and (day_rows.get(d, 0) > 0 or cover(s, min(e, until)) > 0)

    with_data = [d for d in days if day_has_data(d)]
    per_sensor = {sid: sum(day_units.get((sid, d), 0) for d in days) for sid in sensor_ids}
    total_units = sum(per_sensor.values())
    in_out = q.in_out

    if span == "day":
        rows = _hour_rows(q, cover, lo, hi, until, day_has_data(first), tz)
        unit = "hour"
    elif span in ("week", "month"):
        rows = [_row(q, day_label(d)[:3] + f" {d.day}.{d.month}.", *bounds[d], tz,
                     {s: day_units.get((s, d), 0) for s in sensor_ids}, d in with_data,
                     cover(*bounds[d]) if runs_recorded else None,
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
                             any(d in with_data for d in mdays),
                             cover(s, e) if runs_recorded else None,
                             month=f"{first.year}-{m:02d}",
                             days_with_data=sum(d in with_data for d in mdays)))
        unit = "month"

    closed = _closed_days(annotations, bounds)
    avg_days = [d for d in with_data if bounds[d][1] <= now and d not in closed]
    site_day = {d: sum(day_units.get((s, d), 0) for s in sensor_ids) for d in days}

    def average(ds: list[_Date]) -> dict[str, Any]:
        n = len(ds)
        u = sum(site_day[d] for d in ds)
        return {"visits": (2 * u + q.div * n) // (2 * q.div * n) if n else None, "days": n}

    averages = {
        "weekday": average([d for d in avg_days if d.weekday() < 5]),
        "weekend": average([d for d in avg_days if d.weekday() >= 5]),
        "all_days": average(avg_days),
        "by_weekday": {WEEKDAYS[w]: average([d for d in avg_days if d.weekday() == w])
                       for w in range(7)},
        "excluded_closed_days": sorted(d.isoformat() for d in closed if d in with_data),
    }
    busiest_day = None
    if with_data and max(site_day[d] for d in with_data) > 0:
        d = max(with_data, key=lambda d: (site_day[d], -d.toordinal()))
        busiest_day = {"date": d.isoformat(), "label": day_label(d), "visits": q.visits(site_day[d])}
    if span == "day":
        cands = [(r["_units"], -r["_start"]) for r in rows if r["_units"]]
        best = (-max(cands)[1], max(cands)[0]) if cands else None
    else:
        best = q.busiest_hour(lo, until) if until > lo else None
    busiest_hour = _hour_info(best[0], best[1], q, tz) if best else None

    comparisons = [_compare(q, span, first, desc, shift, now, until, hi, tz, total_units, store)
                   for desc, shift in COMPARISONS[span]]
    report: dict[str, Any] = {
        "report": "kiosk visitor report", "version": 1,
        "site": site, "span": span, "key": span_key(span, first),
        "label": span_label(span, first), "timezone": str(tz.key),
        "first_day": first.isoformat(), "last_day": days[-1].isoformat(),
        "start": iso_local(lo, tz), "end": iso_local(hi, tz),
        "until": iso_local(until, tz), "in_progress": lo <= now < hi, "not_started": now < lo,
        "generated_at": iso_local(now, tz),
        "visits": visits, "definition": DEFINITIONS[visits],
        "sensors": sensor_ids, "row_unit": unit,
        "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "has_data": bool(with_data),
        "totals": {"visits": q.visits(total_units) if with_data else 0,
                   "by_sensor": {s: q.visits(u) for s, u in per_sensor.items()},
                   "in": in_out[0], "out": in_out[1]},
        "days": sum(bounds[d][0] < until for d in days), "days_with_data": len(with_data),
        "comparison": comparisons[0], "comparisons": comparisons,
        "averages": averages, "busiest_day": busiest_day, "busiest_hour": busiest_hour,
        "annotations": [{k: v for k, v in a.items() if not k.startswith("_")} for a in annotations],
    }
    report["notes"] = _notes(report, rows)
    return report


def _row(q: _Reader, label: str, start: int, end: int, tz: ZoneInfo, units: dict[str, int],
         has_data: bool, coverage: float | None, **extra: Any) -> dict[str, Any]:
    site_units = sum(units.values())
    return {"label": label, "start": iso_local(start, tz), "end": iso_local(end, tz), **extra,
            "visits": q.visits(site_units) if has_data else None,
            "by_sensor": {s: (q.visits(u) if has_data else None) for s, u in units.items()},
            "has_data": has_data,
            "coverage": None if coverage is None else round(coverage, 4),
            "_start": start, "_units": site_units if has_data else 0}


def _hour_rows(q: _Reader, cover: _Coverage, lo: int, hi: int, until: int, day_has_data: bool,
               tz: ZoneInfo) -> list[dict[str, Any]]:
    """One row per local hour of the day [lo, hi): 23, 24 or 25 of them."""
    units, nrows = q.by_hour(lo, until)
    day_cov = cover(lo, until) if until > lo else 0.0
    cuts = [a for a, _b, _o in q.intervals(lo, hi)][1:]
    out = []
    t = lo
    while t < hi:
        off = _offset(t, tz)
        end = ((t + off) // 3600 + 1) * 3600 - off
        end = min([end, hi, *(c for c in cuts if c > t)])
        cov = cover(t, min(end, until)) if t < until else 0.0
        has = t < until and day_has_data and (cov > 0 or nrows.get(t, 0) > 0 or day_cov == 0)
        local = datetime.fromtimestamp(t, tz)
        out.append(_row(q, f"{local:%H:%M} {offset_label(off)}", t, end, tz,
                        {s: units.get((s, t), 0) for s in q.sensors}, has,
                        cov if cover.starts else None, utc_offset=offset_label(off),
                        hour=local.hour))
        t = end
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


def _compare(q: _Reader, span: str, first: date, desc: str, shift: dict[str, int], now: float,
             until: int, hi: int, tz: ZoneInfo, current_units: int, store: Store) -> dict[str, Any]:
    pfirst, pafter = span_dates(span, _shift_date(first, **shift))
    plo, phi = local_midnight(pfirst, tz), local_midnight(pafter, tz)
    cut = phi
    if until < hi:  # the span is still running: cut the earlier one at the same local time
        local = _shift_dt(datetime.fromtimestamp(until, tz).replace(tzinfo=None), **shift)
        cut = int(min(phi, max(plo, local.replace(tzinfo=tz).timestamp())))
    units, rows = q.by_day(plo, cut)
    cover = _Coverage(store.runs(plo, cut))
    ndays = with_data = 0
    d = pfirst
    while d < pafter:
        s, e = local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)
        if s < cut:
            ndays += 1
            with_data += rows.get(d, 0) > 0 or cover(s, min(e, cut)) > 0
        d += timedelta(days=1)
    prev_units = sum(units.values())
    per_sensor = {s: q.visits(sum(u for (sid, _d), u in units.items() if sid == s)) for s in q.sensors}
    change = pct = None
    if with_data and prev_units:
        change = q.visits(current_units) - q.visits(prev_units)
        pct = round((current_units - prev_units) * 100 / prev_units, 1)
    return {"description": desc, "label": span_label(span, pfirst),
            "start": iso_local(plo, tz), "end": iso_local(phi, tz), "until": iso_local(cut, tz),
            "partial": cut < phi, "visits": q.visits(prev_units) if with_data else None,
            "by_sensor": per_sensor, "days": ndays, "days_with_data": with_data,
            "change": change, "change_pct": pct}


def _notes(r: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    if r["not_started"]:
        notes.append(f"This {r['span']} has not started yet: no counts.")
    elif not r["has_data"]:
        notes.append(f"No counts for {r['label']}: the counter was not running and nothing "
                     f"was imported for this {r['span']}.")
    if r["in_progress"]:
        notes.append(f"In progress: counted until {short_when(r['until'])}; comparisons use the "
                     f"same part of the earlier {r['span']}.")
    if r["span"] == "day" and len(rows) != 24:
        notes.append(f"Clocks changed this day (UTC{rows[0]['utc_offset']} → "
                     f"UTC{rows[-1]['utc_offset']}): {len(rows)} hours.")
    if r["has_data"] and r["days_with_data"] < r["days"]:
        notes.append(f"Counts on {r['days_with_data']} of {r['days']} days; days without counts "
                     f"are left out of the averages.")
    for c in r["comparisons"]:
        if c["visits"] is not None and c["days_with_data"] < c["days"]:
            notes.append(f"The {c['description']} ({c['label']}) has counts on only "
                         f"{c['days_with_data']} of {c['days']} days: the change is not like for like.")
    if r["averages"]["excluded_closed_days"]:
        notes.append(f"{len(r['averages']['excluded_closed_days'])} closed day(s) left out of "
                     f"the averages.")
    return notes


def short_when(iso: str) -> str:
    """``Tuesday 24.11.2026 10:00`` from a local ISO time."""
    dt = datetime.fromisoformat(iso)
    return f"{day_label(dt.date())} {dt:%H:%M}"
