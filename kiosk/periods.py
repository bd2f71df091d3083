"""Periods, coverage and totals derived from the 15-minute buckets.

All times are UTC seconds since the epoch unless a name says ``local``.  A period
of 15 minutes or one hour is aligned in UTC; a day is a local day in the device's
time zone (23, 24 or 25 hours long).
"""

from __future__ import annotations

import bisect
import re
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from kiosk.exc import ExportError

if TYPE_CHECKING:  # SQLite loads only when a command reads the database (fast --help)
    from kiosk.store import Store

PERIODS = {"15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}
UTC = UTC


@dataclass(frozen=True, slots=True)
class Total:
    """Visitors of one sensor in one period; ``coverage`` is the running fraction (0–1)."""

    sensor_id: str
    start: int
    end: int
    in_count: int
    out_count: int
    coverage: float

    def as_dict(self) -> dict:
        return {"sensor_id": self.sensor_id, "start": iso_utc(self.start),
                "end": iso_utc(self.end), "in": self.in_count, "out": self.out_count,
                "coverage": round(self.coverage, 4)}


def utc_offset_s(ts: float, tz: ZoneInfo) -> int:
    """The offset of local time in ``tz`` from UTC at UTC second ``ts``, in seconds."""
    off = datetime.fromtimestamp(ts, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def iso_utc(ts: float) -> str:
    """``2026-11-22T07:00:00Z`` (whole seconds)."""
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(int(ts)))  # 2x datetime's speed


def iso_local(ts: float, tz: ZoneInfo) -> str:
    """``2026-11-22T09:00:00+02:00`` in ``tz``."""
    return datetime.fromtimestamp(int(ts), tz).isoformat()


def local_midnight(d: date, tz: ZoneInfo) -> int:
    """UTC seconds of local midnight starting ``d`` (works across DST)."""
    return int(datetime.combine(d, time(0), tz).timestamp())


def period_bounds(since: float, until: float, period: str, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The periods of length ``period`` that overlap [since, until), in order."""
    if period not in PERIODS:
        raise ExportError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
    if until <= since:
        return []
    if period == "1d":
        day = datetime.fromtimestamp(since, tz).date()
        out = []
        while (start := local_midnight(day, tz)) < until:
            end = local_midnight(day + timedelta(days=1), tz)
            out.append((start, end))
            day += timedelta(days=1)
        return out
    length = PERIODS[period]
    first = int(since // length) * length
    return [(s, s + length) for s in range(first, int(-(-until // 1)), length)]


def coverage(runs: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Fraction of [start, end) covered by the union of ``runs`` (sorted by start)."""
    covered = 0.0
    cursor = start
    for a, b in runs:
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return min(1.0, covered / (end - start))


def totals(
    store: Store,
    since: float,
    until: float,
    period: str,
    tz: ZoneInfo,
    sensor_ids: Iterable[str] | None = None,
) -> list[Total]:
    """Per sensor and period: visitors and coverage, sorted by sensor then start.

    A period appears when the counter was running in it (zero visits included) or
    when it has counts.  Periods the counter was off for entirely are left out.
    """
    bounds = period_bounds(since, until, period, tz)
    if not bounds:
        return []
    lo, hi = bounds[0][0], bounds[-1][1]
    sensors = sorted(sensor_ids) if sensor_ids is not None else store.sensor_ids()
    runs = store.runs(lo, hi)
    covs = [coverage(runs, s, e) for s, e in bounds]
    sums: dict[tuple[str, int], list[int]] = {}
    starts = [s for s, _e in bounds]
    for sid, bstart, i, o in store.buckets(lo, hi, sensors):
        k = bisect.bisect_right(starts, bstart) - 1
        if k < 0 or bstart >= bounds[k][1]:
            continue
        acc = sums.setdefault((sid, k), [0, 0])
        acc[0] += i
        acc[1] += o
    out = []
    for sid in sensors:
        for k, (s, e) in enumerate(bounds):
            got = sums.get((sid, k))
            if got is None and covs[k] <= 0:
                continue
            i, o = got or (0, 0)
            out.append(Total(sid, s, e, i, o, covs[k]))
    return out


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str, tz: ZoneInfo, *, now: float) -> float:
    """Parse a user-given time: ``now``, ``today``, ``yesterday``, a local date
    ``2026-11-22`` (its midnight), a local ``2026-11-22T09:00``, or an ISO time with an
    offset or ``Z``.  Returns UTC seconds."""
    t = text.strip()
    today = datetime.fromtimestamp(now, tz).date()
    if t == "now":
        return now
    if t in ("today", "yesterday", "tomorrow"):
        return local_midnight(today + timedelta(days={"today": 0, "yesterday": -1,
                                                      "tomorrow": 1}[t]), tz)
    if _DATE.fullmatch(t):
        try:
            return local_midnight(date.fromisoformat(t), tz)
        except ValueError as e:
            raise ExportError(f"invalid date {text!r}: {e}") from None
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(
            f"cannot read the time {text!r}; use e.g. 2026-11-22, 2026-11-22T09:00, "
            f"2026-11-22T07:00:00Z, today, yesterday or now"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()
