"""Counted time and like-for-like comparisons (see :mod:`kiosk.report.compute` for the rules).

All times are UTC seconds; a bucket is the 15-minute ``counts`` row it starts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.buckets import BUCKET_S
from kiosk.periods import Counted, iso_local, local_midnight
from kiosk.report.reader import Reader
from kiosk.report.spans import clock_text, fmt_date, shift_date, shift_dt, short_day, span_dates, span_label

if TYPE_CHECKING:
    from kiosk.store import Store

COUNTED_BUCKET = 0.9  #: a 15-minute bucket is "counted" when at least this fraction of it was
FULL = 0.99           #: a row or span is "fully counted" from this fraction on
MIN_OVERLAP = 0.5     #: a change needs this share of the span's counted time counted on both sides
MIN_OVERLAP_BUCKETS = 4  #: ... and at least one hour of it


def counted_time(store: Store, q: Reader, lo: int, hi: int, tz: ZoneInfo) -> Counted:
    """The counted time in [lo, hi): runs and imported rows; a local day that has counts but
    neither (a database from before runs were recorded) is taken as counted whole."""
    c = Counted.load(store, lo, hi, q.sensors)
    if hi <= lo or c.fraction(lo, hi) >= 1.0:
        return c
    _units, rows = q.by_day(lo, hi)
    extra = []
    for d in rows:
        s, e = local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)
        if c.fraction(s, e) == 0:
            extra.append((float(s), float(e)))
    return Counted([*c.intervals(), *extra]) if extra else c


def counted_buckets(c: Counted, lo: int, hi: int) -> set[int]:
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


class Side:
    """The 15-minute buckets of one span part [lo, hi): site units per bucket, which were
    counted, imported rows longer than a bucket (``blocks``); local keys and per-sensor
    units are read when first needed (a comparison of two wholly counted parts needs
    neither)."""

    def __init__(self, store: Store, q: Reader, lo: int, hi: int, tz: ZoneInfo,
                 counted: Counted) -> None:
        self.store, self.q, self.lo, self.hi, self.tz = store, q, lo, hi, tz
        self.time = counted  #: the counted time (runs, imported rows)
        self.blocks = sorted({(a, b) for _s, a, b in store.import_extents(lo, hi, q.sensors)
                              if b - a > BUCKET_S})
        self._block_starts = [a for a, _b in self.blocks]
        self._longest = max((b - a for a, b in self.blocks), default=0)
        self._keys: dict[int, SlotKey] | None = None
        self._sensor_units: dict[str, dict[int, int]] | None = None
        self._counted: set[int] | None = None

    @property
    def counted(self) -> set[int]:
        """Starts of the buckets counted (at least :data:`COUNTED_BUCKET` of each)."""
        if self._counted is None:
            self._counted = counted_buckets(self.time, self.lo, self.hi)
        return self._counted

    def total(self) -> int:
        """Units of the sensors together over the whole part."""
        return sum(self.sensor_sums().values())

    @property
    def fully_counted(self) -> bool:
        return self.hi > self.lo and self.time.fraction(self.lo, self.hi) >= FULL

    @property
    def keys(self) -> dict[int, SlotKey]:
        """Bucket start -> its local date and wall time."""
        if self._keys is None:
            self._keys = {}
            for t in range(self.lo, self.hi, BUCKET_S):
                dt = datetime.fromtimestamp(t, self.tz)
                self._keys[t] = SlotKey(dt.date(), dt.hour, dt.minute, dt.fold)
        return self._keys

    @property
    def sensor_units(self) -> dict[str, dict[int, int]]:
        """Sensor -> bucket start -> units."""
        if self._sensor_units is None:
            self._sensor_units = {s: {} for s in self.q.sensors}
            if self.hi > self.lo and self.q.sensors:
                for sid, t, i, o in self.store.buckets(self.lo, self.hi, self.q.sensors):
                    self._sensor_units[sid][t] = i if self.q.visits_kind == "in" else i + o
        return self._sensor_units

    def sensor_sums(self, starts: Iterable[int] | None = None) -> dict[str, int]:
        """Units per sensor over ``starts`` (None: the whole part)."""
        if starts is None:
            got = (self.store.units_by_sensor(self.q.visits_kind, self.q.sensors, self.lo, self.hi)
                   if self.hi > self.lo and self.q.sensors else {})
            return {s: got.get(s, 0) for s in self.q.sensors}
        wanted = list(starts)
        return {s: sum(u.get(t, 0) for t in wanted) for s, u in self.sensor_units.items()}

    def days_counted(self) -> int:
        """Local days of the part with some counted time."""
        d = datetime.fromtimestamp(self.lo, self.tz).date()
        n = 0
        while (s := local_midnight(d, self.tz)) < self.hi:
            n += self.time.fraction(s, min(self.hi, local_midnight(d + timedelta(days=1), self.tz))) > 0
            d += timedelta(days=1)
        return n

    @property
    def elapsed(self) -> int:
        """Buckets in the part."""
        return max(0, (self.hi - self.lo) // BUCKET_S)

    def resolvable(self, start: int, end: int) -> bool:
        """True if no imported row crosses the edges of [start, end): its figure is known."""
        if not self.blocks:
            return True
        j = bisect.bisect_left(self._block_starts, end) - 1
        while j >= 0 and self._block_starts[j] > start - self._longest:
            a, b = self.blocks[j]
            if a < end and b > start and (a < start or b > end):
                return False
            j -= 1
        return True


def load_side(store: Store, q: Reader, lo: int, hi: int, tz: ZoneInfo, counted: Counted) -> Side:
    """The buckets of [lo, hi) (see :class:`Side`)."""
    return Side(store, q, lo, hi, tz, counted)


def counterpart(d: date, shift: dict[str, int]) -> date | None:
    """The day of the earlier span matching ``d`` (the same day of the month a month or a
    year back; None when that month has no such day)."""
    if "months" in shift:
        m = d.year * 12 + d.month - 1 + shift["months"]
        try:
            return date(m // 12, m % 12 + 1, d.day)
        except ValueError:
            return None
    return d + timedelta(days=shift.get("days", 0))


def pairs_of(cur: Side, prev: Side, shift: dict[str, int]) -> dict[int, int]:
    """Buckets counted in both spans: current start -> earlier start, the same local time of
    the matching day; an imported row longer than a bucket is kept whole or left out."""
    index = {k: t for t, k in prev.keys.items()}
    mapped: dict[int, int] = {}  # every current bucket that has a counterpart
    for t, k in cur.keys.items():
        d = counterpart(k.day, shift)
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


def runs_of(starts: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted bucket starts merged into [start, end) runs."""
    out: list[list[int]] = []
    for t in sorted(starts):
        if out and out[-1][1] == t:
            out[-1][1] = t + BUCKET_S
        else:
            out.append([t, t + BUCKET_S])
    return [(a, b) for a, b in out]



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
            pieces.append(f"{s:%H:%M}–{clock_text(b, tz, s.date())}")
        elif whole:
            pieces.append(f"{s.day}.{s.month}." + ("" if last == s.date() else f"–{last.day}.{last.month}."))
        else:
            pieces.append(f"{short_day(s.date())} {s:%H:%M}–"
                          + (f"{clock_text(b, tz, s.date())}" if last == s.date()
                             else f"{short_day(last)} {clock_text(b, tz, last)}"))
    first = datetime.fromtimestamp(runs[0][0], tz).date()
    if span == "day":
        return f"{short_day(first)} " + ", ".join(pieces)
    hours = sum(b - a for a, b in runs) / 3600
    size = f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.0f} hours"
    if len(pieces) > 3:
        lastd = datetime.fromtimestamp(runs[-1][1] - 1, tz).date()
        return f"{size} between {fmt_date(first)} and {fmt_date(lastd)} ({len(pieces)} pieces)"
    return ", ".join(pieces) + f" ({size})"


def compare(store: Store, q: Reader, span: str, first: date, cur: Side, cur_label: str,
             desc: str, shift: dict[str, int], in_progress: bool, tz: ZoneInfo) -> dict[str, Any]:
    """The change against one earlier span, over the time both were counted."""
    pfirst, pafter = span_dates(span, shift_date(first, **shift))
    plo, phi = local_midnight(pfirst, tz), local_midnight(pafter, tz)
    cut = phi
    if in_progress:  # cut the earlier span at the same local time as the last count
        local = shift_dt(datetime.fromtimestamp(cur.hi, tz).replace(tzinfo=None), **shift)
        cut = int(min(phi, max(plo, local.replace(tzinfo=tz).timestamp())))
        cut -= cut % BUCKET_S
    prev = load_side(store, q, plo, cut, tz, counted_time(store, q, plo, cut, tz))
    plabel = span_label(span, pfirst)
    out: dict[str, Any] = {
        "description": desc, "label": plabel, "start": iso_local(plo, tz), "end": iso_local(phi, tz),
        "until": iso_local(cut, tz), "partial": cut < phi,
        "visits": None, "current_visits": None, "change": None, "change_pct": None,
        "by_sensor": {s: None for s in q.sensors}, "compared": None, "compared_hours": 0.0,
        "like_for_like": False, "reason": None,
        "days": sum(local_midnight(pfirst + timedelta(days=k), tz) < cut
                    for k in range((pafter - pfirst).days)),
        "days_with_data": prev.days_counted(),
    }
    if not prev.time.starts or prev.time.fraction(plo, cut) == 0:
        out["reason"] = "no counts"
        return out
    if cur.hi <= cur.lo or cur.time.fraction(cur.lo, cur.hi) == 0:
        out["reason"] = f"nothing counted in {cur_label}"
        return out
    full = cur.fully_counted and prev.fully_counted
    if full:  # both parts counted throughout: the whole parts, whatever their lengths
        per_sensor = prev.sensor_sums()
        cu, pu = cur.total(), sum(per_sensor.values())
        compared = f"{cur_label}" + (" so far" if in_progress else "")
        hours = cur.elapsed * BUCKET_S / 3600
    else:
        pairs = pairs_of(cur, prev, shift)
        cur_b, prev_b = list(pairs), list(pairs.values())
        per_sensor = prev.sensor_sums(prev_b)
        cu = sum(cur.sensor_sums(cur_b).values())
        pu = sum(per_sensor.values())
        hours = len(pairs) * BUCKET_S / 3600
        what = "hours" if span == "day" else "days" if all(
            (b - a) % 86400 == 0 for a, b in runs_of(cur_b)) else "times"
        compared = f"{compared_text(span, runs_of(cur_b), tz)}"
        plab = (short_day(pfirst) if span == "day" else plabel)
        compared += f" against the same {what} of {plab}"
        if len(pairs) < max(MIN_OVERLAP_BUCKETS, MIN_OVERLAP * len(cur.counted)):
            counted_prev = compared_text(span, runs_of(prev.counted), tz)
            out.update(compared=compared if pairs else None, compared_hours=hours,
                       reason=f"too little overlap: {plabel} was counted {counted_prev}"
                              + (f", {cur_label} {compared_text(span, runs_of(cur.counted), tz)}"
                                 if span == "day" else ""))
            return out
    out.update(visits=q.visits(pu), current_visits=q.visits(cu), compared=compared,
               compared_hours=round(hours, 2), like_for_like=full,
               by_sensor={s: q.visits(u) for s, u in per_sensor.items()})
    out["change"] = out["current_visits"] - out["visits"]
    out["change_pct"] = round((cu - pu) * 100 / pu, 1) if pu else None
    if not pu:
        out["reason"] = "no visits in the earlier span"
    return out
