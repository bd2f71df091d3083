"""The HTML form of a report: one self-contained HTML5 page.

Inline CSS and an inline SVG bar chart (one ``<rect>`` per row, each with a ``<title>``
tooltip), the summary tables below.  No scripts, no fonts or images from elsewhere, no
links at all: the file can be mailed, archived and opened offline.
"""

from __future__ import annotations

from html import escape
from typing import Any

from kiosk.report.compute import WEEKDAYS
from kiosk.report.text import change_text, note_lines, num, period_text, summary_lines, title

BAR = "#2f6db5"  #: weekday / normal bars
BAR_WEEKEND = "#7fa7d9"
W, H = 960, 380
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 20, 64

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
       margin: 2rem auto; max-width: 1000px; padding: 0 1rem; color: #1d232b; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 1.6rem; border-bottom: 1px solid #d5dbe3; }
p.meta { color: #4a5563; margin-top: 0; }
p.definition { background: #eef3fa; border-left: 4px solid #2f6db5; padding: .5rem .8rem; }
.big { font-size: 2.2rem; font-weight: 600; }
.up { color: #1b7a36; } .down { color: #b3261e; }
table { border-collapse: collapse; margin: .4rem 0; }
th, td { padding: .2rem .7rem; border-bottom: 1px solid #e3e7ec; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.nodata td { color: #8a94a3; }
svg { width: 100%; height: auto; background: #fbfcfe; border: 1px solid #e3e7ec; }
svg text { font-size: 12px; fill: #39424e; }
svg .grid { stroke: #dde3ea; stroke-width: 1; }
svg .axis { stroke: #6b7584; stroke-width: 1; }
ul.notes li { margin: .2rem 0; }
@media print { body { margin: 0; } svg { border: none; } }
"""


def _nice_top(value: int) -> tuple[int, int]:
    """A round axis maximum >= value and its tick step (4-5 ticks)."""
    if value <= 0:
        return 4, 1
    step = 1
    while True:
        for m in (1, 2, 5):
            s = step * m
            if s * 5 >= value:
                return -(-value // s) * s, s
        step *= 10


def _tick_label(row: dict[str, Any], unit: str, offsets: bool) -> tuple[str, str]:
    if unit == "hour":
        return row["label"][:2], (row["utc_offset"][:3] if offsets else "")
    if unit == "day":
        return row["label"].split()[1].split(".")[0], row["label"][:2]
    return row["label"][:3], ""


def chart(r: dict[str, Any]) -> str:
    """The inline SVG bar chart of the rows."""
    rows, unit = r["rows"], r["row_unit"]
    top, step = _nice_top(max((x["visits"] or 0 for x in rows), default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / max(len(rows), 1)
    offsets = unit == "hour" and len({x["utc_offset"] for x in rows}) > 1
    out = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title(r))}: visits per {unit}">',
           f"<title>{escape(title(r))}: visits per {unit}</title>"]
    for v in range(0, top + 1, step):
        y = TOP + ph - v * ph / top
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,}</text>')
    for i, x in enumerate(rows):
        v = x["visits"] or 0
        h = v * ph / top
        bx = LEFT + i * slot + slot * 0.12
        weekend = unit == "day" and x.get("weekday") in WEEKDAYS[5:]
        tip = f"{x['label']}: " + (f"{v:,} visits" if x["has_data"] else "no data")
        out.append(f'<rect x="{bx:.1f}" y="{TOP + ph - h:.1f}" width="{slot * 0.76:.1f}" '
                   f'height="{h:.1f}" fill="{BAR_WEEKEND if weekend else BAR}">'
                   f"<title>{escape(tip)}</title></rect>")
        first, second = _tick_label(x, unit, offsets)
        cx = LEFT + (i + 0.5) * slot
        out.append(f'<text x="{cx:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{escape(first)}</text>')
        if second:
            out.append(f'<text x="{cx:.1f}" y="{TOP + ph + 30}" text-anchor="middle" '
                       f'font-size="10">{escape(second)}</text>')
    axis = {"hour": "hour (local time" + (", UTC offset below)" if offsets else ")"),
            "day": "day (weekends lighter)", "month": "month"}[unit]
    out += [f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{W - RIGHT}" y2="{TOP + ph}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>',
            f'<text x="{LEFT + pw / 2:.0f}" y="{H - 8}" text-anchor="middle">{escape(axis)}</text>',
            f'<text x="16" y="{TOP + ph / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 16 {TOP + ph / 2:.0f})">visits</text>', "</svg>"]
    return "\n".join(out)


def _table(head: list[str], body: list[list[Any]], numeric_from: int = 1,
           row_class: list[str] | None = None) -> str:
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="n"' if i >= numeric_from else ""
        return f"<{tag}{cls}>{escape(str(v))}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>"]
    for k, row in enumerate(body):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        out.append(f"<tr{cls}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_html(r: dict[str, Any]) -> str:
    t, c, a = r["totals"], r["comparison"], r["averages"]
    pct = c["change_pct"]
    trend = "" if pct is None else (
        f' <span class="{"up" if pct >= 0 else "down"}">{pct:+.1f} % against the '
        f"{escape(c['description'])} ({escape(c['label'])})</span>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title(r))}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{escape(title(r))}</h1>",
        f'<p class="meta">{escape(period_text(r))}; sensors: '
        f'{escape(", ".join(r["sensors"]) or "none")}; '
        f'generated {escape(r["generated_at"][:16].replace("T", " "))}</p>',
        f'<p class="definition">{escape(r["definition"])}</p>',
        f'<p><span class="big">{num(t["visits"])}</span> visits{trend}</p>',
    ]
    if r["has_data"]:
        parts.append(chart(r))
    else:
        parts.append(f"<p><strong>No counts for {escape(r['label'])}.</strong></p>")
    parts.append("<h2>Summary</h2>")
    parts.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in summary_lines(r)) + "</ul>")
    parts.append("<h2>Comparisons</h2>")
    parts.append(_table(["compared with", "span", "visits then", "change"],
                        [[x["description"] + (" (same part)" if x["partial"] else ""), x["label"],
                          num(x["visits"]), change_text(x).split(" → ")[-1]]
                         for x in r["comparisons"]], numeric_from=2))
    parts.append("<h2>Averages</h2>")
    parts.append(_table(["days", "average visits", "days with data"],
                        [["weekday (Mon–Fri)", num(a["weekday"]["visits"]), a["weekday"]["days"]],
                         ["weekend day (Sat–Sun)", num(a["weekend"]["visits"]), a["weekend"]["days"]],
                         *[[k, num(v["visits"]), v["days"]] for k, v in a["by_weekday"].items()
                           if v["days"]]]))
    if len(t["by_sensor"]) > 1:
        parts.append("<h2>Sensors</h2>")
        parts.append(_table(["sensor", "visits", f"{c['label']}"],
                            [[s, num(v), num(c["by_sensor"].get(s) if c["visits"] is not None else None)]
                             for s, v in t["by_sensor"].items()]))
    notes = note_lines(r)
    if notes:
        parts.append("<h2>Notes</h2>")
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    many = len(r["sensors"]) > 1
    parts.append(f"<h2>Visits per {escape(r['row_unit'])}</h2>")
    parts.append(_table([r["row_unit"], "visits", *(r["sensors"] if many else [])],
                        [[x["label"], num(x["visits"]),
                          *([num(v) for v in x["by_sensor"].values()] if many else [])]
                         for x in r["rows"]],
                        row_class=["" if x["has_data"] else "nodata" for x in r["rows"]]))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
