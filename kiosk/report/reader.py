"""The database side of a report: sums per local hour or day, and annotations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.buckets import BUCKET_S
from kiosk.periods import iso_local, local_midnight
from kiosk.report.spans import EPOCH, offset_at

if TYPE_CHECKING:  # SQLite loads only when a report runs (fast --help)
    from kiosk.store import Store

class Reader:
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
            off = offset_at(t, self.tz)
            end = min(hi, int(datetime.fromtimestamp(t, self.tz).date().toordinal() - EPOCH + 1)
                      * 86400 - off)  # next local midnight if the offset stays
            end = max(end, t + BUCKET_S)
            if end < hi and offset_at(end - 1, self.tz) != off:
                a, b = t // BUCKET_S, -(-end // BUCKET_S)  # first bucket start with a new offset
                while b - a > 1:
                    mid = (a + b) // 2
                    a, b = (mid, b) if offset_at(mid * BUCKET_S, self.tz) == off else (a, mid)
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
                d = date.fromordinal(EPOCH + ld)
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

    def site_by_hour(self, lo: int, hi: int) -> dict[int, int]:
        """Units of the sensors together per UTC start of their local hour slot in [lo, hi)."""
        out: dict[int, int] = {}
        if not self.sensors:
            return out
        for a, b, off in self.intervals(lo, hi):
            for lh, u in self.store.site_sums_by_local_hour(self.visits_kind, self.sensors, a, b, off):
                slot = max(a, lh * 3600 - off)
                out[slot] = out.get(slot, 0) + int(u)
        return out

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


def annotations_in(store: Store, lo: float, hi: float, sensors: Sequence[str],
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
