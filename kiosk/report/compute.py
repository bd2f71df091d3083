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

import time as _time
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.buckets import BUCKET_S
from kiosk.exc import ExportError
from kiosk.periods import Counted, iso_local, local_midnight, utc_offset_s
from kiosk.report.counted import FULL, Side, compare, counted_time, load_side
from kiosk.report.feedback import feedback_section
from kiosk.report.reader import Reader, annotations_in
from kiosk.report.spans import (
    COMPARISONS,
    DEFINITIONS,
    EPOCH,
    FORMATS,
    MONTHS,
    SITE,
    SPANS,
    VISITS,
    WEEKDAYS,
    clock_text,
    day_label,
    offset_at,
    offset_label,
    parse_report_date,
    short_day,
    short_when,
    span_dates,
    span_key,
    span_label,
)

if TYPE_CHECKING:  # SQLite loads only when a report runs (fast --help)
    from kiosk.store import Store

__all__ = ["DEFINITIONS", "FORMATS", "MONTHS", "SITE", "SPANS", "VISITS", "WEEKDAYS", "build_report",
           "day_label", "parse_report_date", "short_when", "span_label"]

_Date = date  #: the type, for annotations inside build_report (its parameter ``date`` hides it)



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
    q = Reader(store, sensor_ids, visits, tz)
    first, after = span_dates(span, date)
    lo, hi = local_midnight(first, tz), local_midnight(after, tz)
    end = int(min(hi, max(lo, now)))  # figures stop at the present
    days = [first + timedelta(days=i) for i in range((after - first).days)]
    bounds = {d: (local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)) for d in days}
    counted = counted_time(store, q, lo, end, tz) if end > lo else Counted([])
    imported = Counted((a, b) for _s, a, b in store.import_extents(lo, end, sensor_ids))
    in_progress = lo <= now < hi
    last = counted.last_before(end)
    until = end if not in_progress else int(max(lo, min(end, last if last is not None else lo)))
    annotations = annotations_in(store, lo, hi, sensor_ids, tz)
    day_units, day_rows = q.by_day(lo, end)
    in_out = q.in_out

    def day_has_data(d: _Date) -> bool:
        s, e = bounds[d]
        return s < end and (day_rows.get(d, 0) > 0 or counted.fraction(s, min(e, end)) > 0)

    with_data = [d for d in days if day_has_data(d)]
    per_sensor = {sid: sum(day_units.get((sid, d), 0) for d in days) for sid in sensor_ids}
    total_units = sum(per_sensor.values())
    cur = load_side(store, q, lo, until - until % BUCKET_S if in_progress else until, tz, counted)
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
    comparisons = [compare(store, q, span, first, cur, short_day(first) if span == "day" else label,
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
        "days_completed": sum(bounds[d][1] <= end for d in days),
        "days_fully_counted": len([d for d in days if bounds[d][1] <= end
                                   and counted.fraction(*bounds[d]) >= FULL]),
        "comparison": comparisons[0], "comparisons": comparisons,
        "averages": averages, "typical_day": typical,
        "busiest_day": busiest_day, "busiest_hour": busiest_hour,
        "annotations": [{k: v for k, v in a.items() if not k.startswith("_")} for a in annotations],
    }
    report["notes"] = _notes(report, rows, now, tz)
    feedback = feedback_section(store, span=span, first=first, tz=tz, end=end,
                                in_progress=in_progress, visits=visits)
    if feedback is not None:  # only a site with feedback terminals has the key
        report["feedback"] = feedback
    return report


def _row(q: Reader, label: str, start: int, end: int, tz: ZoneInfo, units: dict[str, int],
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
                        f"{clock_text(b, tz, first_day)}" if b - a <= 86400 else
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


def _hour_rows(q: Reader, lo: int, hi: int, end: int, tz: ZoneInfo,
               extras: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per local hour of the day [lo, hi): 23, 24 or 25 of them."""
    units, nrows = q.by_hour(lo, end)
    counted: Counted = extras["counted"]
    cuts = [a for a, _b, _o in q.intervals(lo, hi)][1:]
    out = []
    t = lo
    while t < hi:
        off = offset_at(t, tz)
        e = ((t + off) // 3600 + 1) * 3600 - off
        e = min([e, hi, *(c for c in cuts if c > t)])
        has = t < end and (counted.fraction(t, min(e, end)) > 0 or nrows.get(t, 0) > 0)
        local = datetime.fromtimestamp(t, tz)
        out.append(_row(q, f"{local:%H:%M} {offset_label(off)}", t, e, tz,
                        {s: units.get((s, t), 0) for s in q.sensors}, has, extras,
                        utc_offset=offset_label(off), hour=local.hour))
        t = e
    return out


def _typical_day(q: Reader, cur: Side, days: list[date], bounds: dict[date, tuple[int, int]],
                 tz: ZoneInfo) -> dict[str, Any]:
    """Average visits by local hour of day over the completed days (closed days left out),
    weekdays and weekend days apart; an hour counts on a day when all of it was counted."""
    acc = {"weekday": [[0, 0] for _ in range(24)], "weekend": [[0, 0] for _ in range(24)]}
    if days:
        lo, hi = min(bounds[d][0] for d in days), max(bounds[d][1] for d in days)
        site = q.site_by_hour(lo, hi)
        wanted = set(days)
        for a, b, off in q.intervals(lo, hi):
            slot = a
            while slot < b:
                end = min(b, ((slot + off) // 3600 + 1) * 3600 - off)
                local = slot + off
                d = date.fromordinal(EPOCH + local // 86400)
                if (d in wanted and end - slot == 3600 and cur.time.fraction(slot, end) >= FULL
                        and cur.resolvable(slot, end)):
                    cell = acc["weekday" if d.weekday() < 5 else "weekend"][local % 86400 // 3600]
                    cell[0] += site.get(slot, 0)
                    cell[1] += 1
                slot = end
    out: dict[str, Any] = {}
    for kind, hours in acc.items():
        out[kind] = [{"hour": h, "visits": (2 * u + q.div * n) // (2 * q.div * n) if n else None,
                      "days": n} for h, (u, n) in enumerate(hours)]
    return out


def _hour_info(start: int, units: int, q: Reader, tz: ZoneInfo) -> dict[str, Any]:
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
