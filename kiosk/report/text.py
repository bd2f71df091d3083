"""Plain-text forms of a report (table, CSV, JSON) and the phrases the HTML form shares."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from typing import Any

from kiosk.report.compute import SITE, day_label, fmt_date, short_when

BLOCKS = "▏▎▍▌▋▊▉█"


def bar(value: int | None, top: int, width: int = 30) -> str:
    """A horizontal bar of unicode blocks, ``width`` characters for ``top``."""
    if not value or not top:
        return ""
    eighths = round(value * width * 8 / top)
    full, part = divmod(eighths, 8)
    return "█" * full + (BLOCKS[part - 1] if part else "") or "▏"


def num(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def change_text(c: dict[str, Any]) -> str:
    if c["visits"] is None:
        return "no counts"
    if c["change_pct"] is None:
        return f"{num(c['visits'])} (no change computed)"
    return f"{num(c['visits'])} → {c['change']:+,} ({c['change_pct']:+.1f} %)"


def title(r: dict[str, Any]) -> str:
    site = f" at {r['site']}" if r.get("site") else ""
    return f"Visitor report{site}: {r['label']}"


def period_text(r: dict[str, Any]) -> str:
    """``Monday 23.11.2026 – Sunday 29.11.2026, local time (Europe/Helsinki)``."""
    first, last = date.fromisoformat(r["first_day"]), date.fromisoformat(r["last_day"])
    days = day_label(first) if first == last else f"{day_label(first)} – {day_label(last)}"
    return f"{days}, local time ({r['timezone']})"




def summary_lines(r: dict[str, Any]) -> list[str]:
    """The figures below the rows, one line each (shared by the table and HTML views)."""
    t, a = r["totals"], r["averages"]
    out = [f"Total: {num(t['visits'])} visits" + (
        " (" + ", ".join(f"{s} {num(v)}" for s, v in t["by_sensor"].items()) + ")"
        if len(t["by_sensor"]) > 1 else "")]
    for c in r["comparisons"]:
        out.append(f"Compared with the {c['description']}, {c['label']}"
                   f"{' (same part)' if c['partial'] else ''}: {change_text(c)}")
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


def render_table(r: dict[str, Any]) -> str:
    """Plain text: the rows with a bar chart, the comparisons, averages and notes."""
    from tabulate import tabulate

    lines = [title(r), f"{period_text(r)}; sensors: {', '.join(r['sensors']) or 'none'}",
             r["definition"], ""]
    if r["has_data"]:
        top = max((x["visits"] or 0 for x in r["rows"]), default=0)
        many = len(r["sensors"]) > 1
        head = [r["row_unit"], "visits", *(r["sensors"] if many else []), ""]
        body = [[x["label"], num(x["visits"]), *([num(v) for v in x["by_sensor"].values()] if many else []),
                 bar(x["visits"], top)] for x in r["rows"]]
        lines += [tabulate(body, headers=head, disable_numparse=True,
                           colalign=("left", *("right",) * (len(head) - 2), "left")), ""]
    lines += summary_lines(r)
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
    w.writerow(["label", "start", "end", "sensor_id", "visits"])
    for x in r["rows"]:
        for sid, v in x["by_sensor"].items():
            w.writerow([x["label"], x["start"], x["end"], sid, "" if v is None else v])
        w.writerow([x["label"], x["start"], x["end"], SITE, "" if x["visits"] is None else x["visits"]])
    return buf.getvalue()


def render_json(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2, ensure_ascii=False) + "\n"


