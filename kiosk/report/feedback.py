"""The visitor-feedback part of a report: what the satisfaction buttons said in a span.

:func:`feedback_section` computes plain JSON-able figures (rendered by
:mod:`kiosk.report.text`, :mod:`kiosk.report.html` and the dashboard).  Every figure carries
its definition (:data:`FEEDBACK_DEFINITIONS`); a span or an hour with fewer than
:data:`MIN_ANSWERS` answers says it is too few to compare instead of a share or a score.
Repeated presses (within the terminal's ``lockout_s`` of its previous press) are shown apart
and are in no figure.  Times are UTC seconds; hours of the day are local.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk.feedback import counted_visits, score
from kiosk.periods import iso_local, local_midnight
from kiosk.report.spans import COMPARISONS, MONTHS, day_label, shift_date, span_dates, span_label

if TYPE_CHECKING:
    from kiosk.store import Store

#: Fewer answers than this in a span (or an hour of the day) are too few to compare.
MIN_ANSWERS = 30
TOO_FEW = f"too few to compare (fewer than {MIN_ANSWERS} answers)"

FEEDBACK_DEFINITIONS = {
    "answers": "Answers: one press of a feedback button is one visitor's answer. A press less "
               "than lockout_s (3 s by default) after the terminal's previous press is a "
               "repeated press: kept and shown apart, but left out of every figure.",
    "share_positive": "Share positive: the answers in the top half of the scale (very happy "
                      "and happy on four buttons; the middle button of an odd scale is "
                      "neither), as a percentage of all answers.",
    "mean_score": "Mean score: the average score of the answers on a 0-100 scale, the best "
                  "button 100 and the worst 0, the others evenly between (four buttons: 100, "
                  "67, 33, 0).",
    "response_rate": "Response rate: answers per 100 visits, both over the same counted "
                     "time of the span (visits this kiosk counted; imported visits are left "
                     "out).",
    "lowest_hours": f"Lowest-score hours: the hours of the day (local time) with the lowest "
                    f"mean score over the span, among hours with at least {MIN_ANSWERS} "
                    f"answers.",
    "comparison": "Comparison: the same span earlier (the visits' headline comparison), over "
                  "the same length of time from its start while this span is still running; "
                  f"both need at least {MIN_ANSWERS} answers.",
}


def _stats(rows: list[tuple[str, int, int, int, int]]) -> dict[str, Any]:
    """Figures of (level, rank, scale, answers, repeated) rows (several terminals allowed)."""
    by_level: dict[str, list[int]] = {}
    n = rep = positive = top = 0
    points = 0.0
    for level, rank, scale, answers, repeated in rows:
        top = max(top, scale)
        acc = by_level.setdefault(level, [rank, 0, 0])
        acc[1] += answers
        acc[2] += repeated
        n += answers
        rep += repeated
        positive += answers if rank < scale // 2 else 0
        points += answers * score(rank, scale)
    levels = [{"level": lv, "rank": r, "answers": a, "repeated": rp}
              for lv, (r, a, rp) in sorted(by_level.items(), key=lambda kv: (kv[1][0], kv[0]))]
    enough = n >= MIN_ANSWERS
    return {"answers": n, "repeated": rep, "levels": levels, "enough": enough, "scale": top,
            "share_positive_pct": round(100.0 * positive / n, 1) if n else None,
            "mean_score": round(points / n, 1) if n else None}


def _rows(store: Store, a: int, b: int) -> list[tuple[str, int, int, int, int]]:
    return [(r.level, r.rank, r.scale, r.answers, r.repeated)
            for r in store.feedback_rows(a, b)]


def _chart_rows(store: Store, span: str, first: date, after: date, tz: ZoneInfo, end: int
                ) -> list[dict[str, Any]]:
    """Answers per level and row (hours of a day, days of a week or month, months of a
    year), for the stacked bar chart."""
    bounds: list[tuple[str, int, int]] = []
    lo, hi = local_midnight(first, tz), local_midnight(after, tz)
    if span == "day":
        t = lo
        while t < hi:
            h = datetime.fromtimestamp(t, tz)
            bounds.append((f"{h.hour:02d}:00", t, min(t + 3600, hi)))
            t += 3600
    elif span in ("week", "month"):
        d = first
        while d < after:
            bounds.append((day_label(d)[:3] + f" {d.day}.{d.month}.", local_midnight(d, tz),
                           local_midnight(d + timedelta(days=1), tz)))
            d += timedelta(days=1)
    else:
        for m in range(1, 13):
            s = local_midnight(date(first.year, m, 1), tz)
            e = local_midnight(date(first.year + (m == 12), m % 12 + 1, 1), tz)
            bounds.append((MONTHS[m - 1], s, e))
    per: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    starts = [s for _l, s, _e in bounds]
    for key, tally in store.feedback_buckets(lo, hi):
        k = bisect.bisect_right(starts, key.start) - 1
        if k >= 0:
            per[k][key.level] += tally.answers
    return [{"label": label, "start": iso_local(s, tz), "future": s >= end,
             "answers": dict(per.get(k, {}))} for k, (label, s, _e) in enumerate(bounds)]


def _lowest_hours(store: Store, a: int, b: int, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Up to three hours of the day with the lowest mean score (≥ MIN_ANSWERS answers)."""
    acc: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    for key, tally in store.feedback_buckets(a, b):
        hour = datetime.fromtimestamp(key.start, tz).hour
        acc[hour][0] += tally.answers
        acc[hour][1] += tally.answers * score(key.rank, key.scale)
    hours = [(round(p / n, 1), h, int(n)) for h, (n, p) in acc.items() if n >= MIN_ANSWERS]
    return [{"hour": f"{h:02d}:00-{h + 1:02d}:00", "mean_score": m, "answers": n}
            for m, h, n in sorted(hours)[:3]]


def feedback_section(store: Store, *, span: str, first: date, tz: ZoneInfo, end: int,
                     in_progress: bool, visits: str = "in") -> dict[str, Any] | None:
    """The feedback figures of the ``span`` starting on local date ``first``, up to UTC
    second ``end`` (the present, for a span still running); None when the site has no
    feedback terminal."""
    terminals = store.feedback_terminal_ids()
    if not terminals:
        return None
    _first, after = span_dates(span, first)
    lo = local_midnight(first, tz)
    cur = _stats(_rows(store, lo, end)) if end > lo else _stats([])
    seen = counted_visits(store, lo, end, visits) if end > lo else 0
    desc, shift = COMPARISONS[span][0]
    pfirst, pafter = span_dates(span, shift_date(first, **shift))
    plo = local_midnight(pfirst, tz)
    phi = min(local_midnight(pafter, tz), plo + (end - lo)) if in_progress else \
        local_midnight(pafter, tz)
    then = _stats(_rows(store, plo, phi))
    comparison: dict[str, Any] = {"description": desc, "label": span_label(span, pfirst),
                                  "answers": then["answers"], "compared": False,
                                  "text": TOO_FEW}
    if cur["enough"] and then["enough"]:
        comparison.update(
            compared=True, mean_score_then=then["mean_score"],
            share_positive_pct_then=then["share_positive_pct"],
            mean_score_change=round(cur["mean_score"] - then["mean_score"], 1),
            share_positive_change=round(cur["share_positive_pct"] - then["share_positive_pct"], 1))
        comparison["text"] = (
            f"mean score {then['mean_score']:.1f} → {cur['mean_score']:.1f} "
            f"({comparison['mean_score_change']:+.1f} points), share positive "
            f"{then['share_positive_pct']:.1f} % → {cur['share_positive_pct']:.1f} % "
            f"({comparison['share_positive_change']:+.1f} points)")
    return {
        "terminals": terminals, **cur,
        "too_few": not cur["enough"],
        "visits": seen,
        "response_rate": round(100.0 * cur["answers"] / seen, 1) if seen else None,
        "lowest_hours": _lowest_hours(store, lo, end, tz) if end > lo else [],
        "comparison": comparison,
        "rows": _chart_rows(store, span, first, after, tz, end),
        "definitions": dict(FEEDBACK_DEFINITIONS),
    }


def feedback_lines(f: dict[str, Any] | None) -> list[str]:
    """The feedback section as plain-text lines (empty without terminals)."""
    if f is None:
        return []
    lines = [f"Visitor feedback ({', '.join(f['terminals'])}):"]
    lines.append(f"- answers: {f['answers']:,}" + "".join(
        f"; {lv['level'].replace('_', ' ')} {lv['answers']:,}" for lv in f["levels"])
        + f" (repeated presses, not counted: {f['repeated']:,})")
    if f["too_few"]:
        lines.append(f"- share positive and mean score: {TOO_FEW}")
    else:
        lines.append(f"- share positive: {f['share_positive_pct']:.1f} %; "
                     f"mean score: {f['mean_score']:.1f} / 100")
    rate = f["response_rate"]
    lines.append("- response rate: " + (f"{rate:.1f} answers per 100 visits ({f['visits']:,} "
                                         f"visits)" if rate is not None else "no visits counted"))
    low = f["lowest_hours"]
    lines.append("- lowest-score hours: " + ("; ".join(
        f"{h['hour']} {h['mean_score']:.1f} ({h['answers']} answers)" for h in low)
        if low else f"none with at least {MIN_ANSWERS} answers"))
    c = f["comparison"]
    lines.append(f"- compared with {c['description']} ({c['label']}): {c['text']}")
    lines.append("Definitions:")
    lines += [f"  {d}" for d in f["definitions"].values()]
    return lines
