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

from kiosk.exc import UsageError

if TYPE_CHECKING:  # SQLite loads only when a command reads the database (fast --help)
    from kiosk.store import Store

PERIODS = {"15m": 900, "30m": 1800, "1h": 3600, "1d": 86400}
UTC = UTC


@dataclass(frozen=True, slots=True)
class Total:
    """Visitors of one sensor in one period; ``coverage`` is the counted fraction (0–1),
    ``imported`` whether counts of an earlier counter (``kiosk import``) are in it."""

    sensor_id: str
    start: int
    end: int
    in_count: int
    out_count: int
    coverage: float
    imported: bool = False

    def as_dict(self) -> dict:
        return {"sensor_id": self.sensor_id, "start": iso_utc(self.start),
                "end": iso_utc(self.end), "in": self.in_count, "out": self.out_count,
                "coverage": round(self.coverage, 4), "imported": self.imported}


def utc_offset_s(ts: float, tz: ZoneInfo) -> int:
    """The offset of local time in ``tz`` from UTC at UTC second ``ts``, in seconds."""
    off = datetime.fromtimestamp(ts, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def iso_utc(ts: float) -> str:
    """``2026-11-22T07:00:00Z`` (whole seconds)."""
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(int(ts)))  # 2x datetime's speed


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``10 h 3 min``, ``2 d 4 h`` (seconds: a duration)."""
    s = round(max(0.0, seconds))
    if s < 120:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def iso_local(ts: float, tz: ZoneInfo) -> str:
    """``2026-11-22T09:00:00+02:00`` in ``tz``."""
    return datetime.fromtimestamp(int(ts), tz).isoformat()


def local_midnight(d: date, tz: ZoneInfo) -> int:
    """UTC seconds of local midnight starting ``d`` (works across DST)."""
    return int(datetime.combine(d, time(0), tz).timestamp())


def period_bounds(since: float, until: float, period: str, tz: ZoneInfo) -> list[tuple[int, int]]:
    """The periods of length ``period`` that overlap [since, until), in order."""
    if period not in PERIODS:
        raise UsageError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
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


class Counted:
    """When counts were taken (UTC s): the union of the daemon's ``runs`` and the extents
    of imported rows (``import_rows``).  Time outside it was not counted: its figures are
    unknown, not zero."""

    def __init__(self, intervals: Iterable[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for a, b in sorted(intervals):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            elif b > a:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    @classmethod
    def load(cls, store: Store, lo: float, hi: float,
             sensor_ids: Sequence[str] | None = None) -> Counted:
        """The counted time of ``store`` overlapping [lo, hi) (imports of ``sensor_ids``)."""
        return cls([*store.runs(lo, hi),
                    *((a, b) for _s, a, b in store.import_extents(lo, hi, sensor_ids))])

    def intervals(self) -> list[tuple[float, float]]:
        return list(zip(self.starts, self.ends, strict=True))

    def fraction(self, start: float, end: float) -> float:
        """Fraction (0-1) of [start, end) that was counted."""
        covered = 0.0
        i = bisect.bisect_right(self.ends, start)
        while i < len(self.starts) and self.starts[i] < end:
            covered += min(end, self.ends[i]) - max(start, self.starts[i])
            i += 1
        return min(1.0, covered / (end - start)) if end > start else 0.0

    def last_before(self, t: float) -> float | None:
        """The last counted moment at or before ``t`` (UTC s), or None."""
        i = bisect.bisect_right(self.starts, t) - 1
        return None if i < 0 else min(self.ends[i], t)


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
    *,
    with_imports: bool = False,
) -> list[Total]:
    """Per sensor and period: visitors and coverage, sorted by sensor then start.

    ``coverage`` is the fraction of the period the daemon was running (what the uploader
    sends).  ``with_imports`` (``kiosk export``): imported rows of the sensor that lie
    inside the period count as counted time too, so an imported period is not "0 %
    counted"; ``imported`` is set either way.

    A period appears when it was counted (zero visits included) or when it has counts.
    Periods that were not counted at all are left out, never given as 0.
    """
    bounds = period_bounds(since, until, period, tz)
    if not bounds:
        return []
    lo, hi = bounds[0][0], bounds[-1][1]
    sensors = sorted(sensor_ids) if sensor_ids is not None else store.sensor_ids()
    runs = store.runs(lo, hi)
    covs = [coverage(runs, s, e) for s, e in bounds]
    starts = [s for s, _e in bounds]
    imported: dict[tuple[str, int], float] = {}  # (sensor, period index) -> imported seconds
    for sid, a, b in store.import_extents(lo, hi, sensors):
        k = bisect.bisect_right(starts, a) - 1
        if k < 0:
            continue
        inside = b <= bounds[k][1]  # the row lies within the period: its time was counted
        imported[sid, k] = imported.get((sid, k), 0.0) + (b - a if inside else 0.0)
    sums: dict[tuple[str, int], list[int]] = {}
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
            cov = covs[k]
            if with_imports and (sid, k) in imported:
                cov = min(1.0, cov + imported[sid, k] / (e - s))
            if got is None and cov <= 0:
                continue
            i, o = got or (0, 0)
            out.append(Total(sid, s, e, i, o, cov, (sid, k) in imported))
    return out


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RELATIVE = re.compile(r"(\d+)\s*(m|min|h|d|w)")
_UNIT_S = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_FORMS = ("24h, 7d, 30m, 2w (that long ago), today, yesterday, now, 2026-11-22 (local "
              "midnight), 2026-11-22T09:00 (local) or an ISO time with Z or an offset")
"""What :func:`parse_time` reads, for help texts and error messages."""


def parse_time(text: str, tz: ZoneInfo, *, now: float) -> float:
    """The one reader of user-given times (every ``--since``/``--until``): ``24h``, ``30m``,
    ``7d``, ``2w`` (that long before ``now``), ``now``, ``today``, ``yesterday``,
    ``tomorrow`` (local midnight), a local date ``2026-11-22`` (its midnight), a local
    ``2026-11-22T09:00`` or ``2026-11-22 09:00``, or an ISO time with an offset or ``Z``.
    Returns UTC seconds."""
    t = text.strip().lower()
    if m := _RELATIVE.fullmatch(t):
        return now - int(m.group(1)) * _UNIT_S[m.group(2)]
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
            raise UsageError(f"invalid date {text!r}: {e}") from None
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read the time {text!r}; use {TIME_FORMS}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()
