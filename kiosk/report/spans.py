"""Spans of a report and their names: days, weeks, months and years in local time."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from kiosk.exc import UsageError
from kiosk.periods import utc_offset_s

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
EPOCH = date(1970, 1, 1).toordinal()


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
        return first, shift_date(first, months=1)
    if span == "year":
        return date(d.year, 1, 1), date(d.year + 1, 1, 1)
    raise UsageError(f"unknown span {span!r}; expected one of {', '.join(SPANS)}")


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


def shift_date(d: date, *, days: int = 0, months: int = 0) -> date:
    if months:
        m = d.year * 12 + d.month - 1 + months
        y, m = divmod(m, 12)
        nxt = date(y + (m + 1) // 12, (m + 1) % 12 + 1, 1)
        d = date(y, m + 1, min(d.day, (nxt - timedelta(days=1)).day))
    return d + timedelta(days=days)


def shift_dt(dt: datetime, **shift: int) -> datetime:
    return datetime.combine(shift_date(dt.date(), **shift), dt.time())


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
        raise UsageError(f"invalid date {text!r} ({e}); use e.g. 2026-11-24, 2026-11, 2026, "
                          f"2026-W48, today or yesterday") from None
    raise UsageError(f"date {text!r} does not name one {span}; give a day inside it, e.g. "
                      f"{today.isoformat()}")


def offset_label(seconds: float) -> str:
    """``+03:00``."""
    s = int(seconds)
    sign = "-" if s < 0 else "+"
    h, m = divmod(abs(s) // 60, 60)
    return f"{sign}{h:02d}:{m:02d}"


def offset_at(ts: float, tz: ZoneInfo) -> int:
    return utc_offset_s(ts, tz)

def clock_text(ts: int, tz: ZoneInfo, day: date) -> str:
    """``16:30``; ``24:00`` for the midnight ending ``day``."""
    dt = datetime.fromtimestamp(ts, tz)
    return "24:00" if dt.date() > day and dt.hour == 0 and dt.minute == 0 else f"{dt:%H:%M}"


def short_day(d: date) -> str:
    """``Tue 1.12.``"""
    return f"{WEEKDAYS[d.weekday()][:3]} {d.day}.{d.month}."


def short_when(iso: str) -> str:
    """``Tuesday 24.11.2026 10:00`` from a local ISO time."""
    dt = datetime.fromisoformat(iso)
    return f"{day_label(dt.date())} {dt:%H:%M}"
