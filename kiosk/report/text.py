"""Plain-text forms of a report (table, CSV, JSON) and the phrases the HTML form shares."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from typing import Any

from kiosk.report.feedback import feedback_lines
from kiosk.report.spans import SITE, day_label, fmt_date, short_when

BLOCKS = "▏▎▍▌▋▊▉█"


def bar(value: int | None, top: int, width: int = 30) -> str:
    """A horizontal bar of unicode blocks, ``width`` characters for ``top``."""
    if not value or not top:
        return ""
    eighths = round(value * width * 8 / top)
    full, part = divmod(eighths, 8)
    return "█" * full + (BLOCKS[part - 1] if part else "") or "▏"


MINUS = "\u2212"  #: a real minus sign: "−50" cannot be read as a dash


def num(n: int | None) -> str:
    """``5,509``; ``–`` for a figure that was not counted (never 0)."""
    return "–" if n is None else f"{n:,}".replace("-", MINUS)


def signed(n: float, fmt: str = ",") -> str:
    """``+50``, ``−50``, ``±0``."""
    if n == 0:
        return "±0"
    return ("+" if n > 0 else MINUS) + format(abs(n), fmt)


def change_text(c: dict[str, Any]) -> str:
    """``5,509 → 5,459 (−50, −0.9 %)``: the earlier figure, the figure now, the change."""
    if c["visits"] is None:
        reason = c["reason"] or "no counts"
        return reason if reason == "no counts" else f"no change given: {reason}"
    if c["change_pct"] is None:
        return f"{num(c['visits'])} → {num(c['current_visits'])} (no percentage: {c['reason']})"
    if c["change"] == 0 and c["change_pct"] == 0:
        return f"{num(c['visits'])} → {num(c['current_visits'])} (±0 %)"
    return (f"{num(c['visits'])} → {num(c['current_visits'])} "
            f"({signed(c['change'])}, {signed(c['change_pct'], '.1f')} %)")


def comparison_line(c: dict[str, Any]) -> str:
    """``Previous day (Monday 30.11.2026): Tue 1.12. 16:30–24:00 against the same hours of
    Mon 30.11.: 350 → 350 (±0 %)``: what was compared, then the figures."""
    head = f"{c['description'][0].upper()}{c['description'][1:]} ({c['label']})"
    if c["visits"] is not None and not c["like_for_like"] and c["compared"]:
        head += f": {c['compared']}"
    elif c["visits"] is not None and c["partial"]:
        until = datetime.fromisoformat(c["until"])
        head += f", the same part (until {until.day}.{until.month}. {until:%H:%M})"
    return f"{head}: {change_text(c)}"


def headline_change(r: dict[str, Any]) -> str | None:
    """``+6.0 % against the previous year (2018)``, only for a like-for-like comparison."""
    c = r["comparison"]
    if c["visits"] is None or not c["like_for_like"] or c["change_pct"] is None:
        return None
    return f"{signed(c['change_pct'], '.1f')} % against the {c['description']} ({c['label']})"


def title(r: dict[str, Any]) -> str:
    site = f" at {r['site']}" if r.get("site") else ""
    return f"Visitor report{site}: {r['label']}"


def period_text(r: dict[str, Any]) -> str:
    """``Monday 23.11.2026 – Sunday 29.11.2026, local time (Europe/Helsinki)``."""
    first, last = date.fromisoformat(r["first_day"]), date.fromisoformat(r["last_day"])
    days = day_label(first) if first == last else f"{day_label(first)} – {day_label(last)}"
    return f"{days}, local time ({r['timezone']})"




def coverage_text(r: dict[str, Any]) -> str:
    """``counted 38 of 336 days`` / ``counted 16:18–24:00``: how much of the span the figures cover."""
    if r["span"] == "day":
        return f"{r['coverage'] * 100:.0f} % of the day counted" if r["coverage"] < 0.995 else ""
    if r["days_fully_counted"] < r["days_completed"]:
        return (f"{r['days_fully_counted']} of {r['days_completed']} completed days counted in "
                f"full, {r['days_with_data']} with counts")
    return ""


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The figures below the rows, one line each (shared by the table and HTML views)."""
    t, a = r["totals"], r["averages"]
    cov = coverage_text(r)
    out = [f"Total: {num(t['visits'])} visits" + (
        " (" + ", ".join(f"{s} {num(v)}" for s, v in t["by_sensor"].items()) + ")"
        if len(t["by_sensor"]) > 1 else "") + (f"; {cov}" if cov and r["has_data"] else "")]
    for c in r["comparisons"]:
        out.append(comparison_line(c))
    out.append(f"Average per weekday: {num(a['weekday']['visits'])} ({_days(a['weekday']['days'])});"
               f" per weekend day: {num(a['weekend']['visits'])} ({_days(a['weekend']['days'])})")
    if r["busiest_day"] and r["span"] != "day":
        out.append(f"Busiest day: {r['busiest_day']['label']}, {num(r['busiest_day']['visits'])} visits")
    if r["busiest_hour"]:
        out.append(f"Busiest hour: {r['busiest_hour']['label']}, "
                   f"{num(r['busiest_hour']['visits'])} visits")
    return out


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _when_text(start: str, end: str) -> str:
    """``Tuesday 24.11.2026``, ``24.12.2026–26.12.2026``, ``Tuesday 24.11.2026 10:00–12:00``."""
    s, e = datetime.fromisoformat(start), datetime.fromisoformat(end)
    if s.time() == e.time() == datetime.min.time() and e > s:
        last = e.date() - timedelta(days=1)
        return day_label(s.date()) if last == s.date() else f"{fmt_date(s.date())}–{fmt_date(last)}"
    if s.date() == e.date():
        return f"{day_label(s.date())} {s:%H:%M}–{e:%H:%M}"
    return f"{short_when(start)} – {short_when(end)}"


def note_lines(r: dict[str, Any]) -> list[str]:
    out = list(r["notes"])
    for a in r["annotations"]:
        where = f" [{a['sensor_id']}]" if a["sensor_id"] else ""
        out.append(f"{a['kind']}{where} {_when_text(a['start'], a['end'])}: {a['note']}")
    return out


def row_note(x: dict[str, Any]) -> str:
    """What a reader must know about one row: not counted, partly counted, imported,
    annotations (``counted 42 %; imported; closed: Christmas``)."""
    if x["future"]:
        return ""
    parts = []
    if not x["has_data"] and not x["coverage"]:
        parts.append("not counted")
    elif not x["has_data"]:
        pass  # counted, but inside a longer imported total (its note says so)
    elif x["coverage"] < 0.995:
        parts.append(f"counted {x['coverage'] * 100:.0f} %")
    if x["imported"]:
        parts.append("imported")
    return "; ".join(parts + x["notes"])


def typical_rows(r: dict[str, Any]) -> list[tuple[int, int | None, int, int | None, int]]:
    """(hour, weekday average, weekdays, weekend average, weekend days) for the hours that
    have a figure on either kind of day."""
    t = r.get("typical_day")
    if not t:
        return []
    return [(wd["hour"], wd["visits"], wd["days"], we["visits"], we["days"])
            for wd, we in zip(t["weekday"], t["weekend"], strict=True)
            if wd["visits"] is not None or we["visits"] is not None]


def typical_head(rows: list[tuple[int, int | None, int, int | None, int]]) -> list[str]:
    nwd = max((x[2] for x in rows), default=0)
    nwe = max((x[4] for x in rows), default=0)
    return ["hour", f"weekday ({_days(nwd)})", f"weekend day ({_days(nwe)})"]


def render_table(r: dict[str, Any]) -> str:
    """Plain text: the rows with a bar chart, the comparisons, averages and notes."""
    from tabulate import tabulate

    lines = [title(r), f"{period_text(r)}; sensors: {', '.join(r['sensors']) or 'none'}",
             r["definition"], ""]
    if r["has_data"]:
        top = max((x["visits"] or 0 for x in r["rows"]), default=0)
        many = len(r["sensors"]) > 1
        notes = [row_note(x) for x in r["rows"]]
        head = [r["row_unit"], "visits", *(r["sensors"] if many else []), "",
                *(["notes"] if any(notes) else [])]
        body = [[x["label"], num(x["visits"]) if not x["future"] else "",
                 *([num(v) if not x["future"] else "" for v in x["by_sensor"].values()] if many else []),
                 bar(x["visits"], top), *([n] if any(notes) else [])]
                for x, n in zip(r["rows"], notes, strict=True)]
        lines += [tabulate(body, headers=head, disable_numparse=True,
                           colalign=("left", *("right",) * (1 + many * len(r["sensors"])),
                                     "left", "left")[:len(head)]), ""]
        typ = typical_rows(r)
        if typ:
            ttop = max((v or 0 for x in typ for v in (x[1], x[3])), default=0)
            head = typical_head(typ)
            kinds = [k for k, n in ((1, typ[0][2]), (3, typ[0][4])) if any(x[k + 1] for x in typ) or n]
            lines += ["A typical day: average visits by hour of day (local time), over the "
                      "completed days; an hour counts where it was counted in full", "",
                      tabulate([[f"{x[0]:02d}:00",
                                 *(c for k in kinds for c in (num(x[k]), bar(x[k], ttop, 20)))]
                                for x in typ],
                               headers=["hour", *(c for k in kinds for c in (head[(k + 1) // 2], ""))],
                               disable_numparse=True,
                               colalign=("left", *(("right", "left") * len(kinds)))), ""]
    lines += summary_lines(r)
    if r.get("feedback"):
        lines += ["", *feedback_lines(r["feedback"])]
    notes = note_lines(r)
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def render_csv(r: dict[str, Any]) -> str:
    """``# `` comment lines (title, definition, totals), then label,start,end,sensor_id,visits:
    one line per row and sensor, then the site line (sensor_id ``(site)``)."""
    buf = io.StringIO()
    for line in [title(r), r["definition"], *summary_lines(r), *note_lines(r)]:
        buf.write(f"# {line}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for x in r["rows"]:
        extra = [f"{x['coverage']:.4g}", "yes" if x["imported"] else "", row_note(x)]
        for sid, v in x["by_sensor"].items():
            w.writerow([x["label"], x["start"], x["end"], sid, "" if v is None else v, *extra])
        w.writerow([x["label"], x["start"], x["end"], SITE, "" if x["visits"] is None else x["visits"],
                    *extra])
    return buf.getvalue()


#: Columns of the CSV form: visits is empty where nothing was counted (not 0); coverage is
#: the counted fraction (0-1) of the row's elapsed time; imported is "yes" for imported history.
CSV_HEADER = ["label", "start", "end", "sensor_id", "visits", "coverage", "imported", "notes"]


def render_json(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2, ensure_ascii=False) + "\n"


