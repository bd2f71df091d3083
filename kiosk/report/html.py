"""The HTML form of a report: one self-contained HTML5 page.

Inline CSS and an inline SVG bar chart (one ``<rect>`` per row, each with a ``<title>``
tooltip), the summary tables below.  No scripts, no fonts or images from elsewhere, no
links at all: the file can be mailed, archived and opened offline.
"""

from __future__ import annotations

from html import escape
from typing import Any

from kiosk.report.feedback_html import feedback_html
from kiosk.report.spans import WEEKDAYS
from kiosk.report.text import (
    change_text,
    coverage_text,
    headline_change,
    note_lines,
    num,
    period_text,
    row_note,
    summary_lines,
    title,
    typical_head,
    typical_rows,
)

BAR = "#2f6db5"  #: weekday / normal bars
BAR_WEEKEND = "#7fa7d9"
BAR_IMPORTED = "#2e8b78"  #: imported history (kiosk import)
NOT_COUNTED = "#b9c0ca"  #: the stripes of a span that was not counted
MARK = "#d9822b"  #: annotation markers
W, H = 960, 400
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 44, 64

#: Patterns the bars use: grey stripes for "not counted", blue stripes for "partly counted".
DEFS = (f'<defs><pattern id="nc" width="8" height="8" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="8" height="8" fill="#f1f3f6"/>'
        f'<rect width="3" height="8" fill="{NOT_COUNTED}"/></pattern>'
        f'<pattern id="pc" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{BAR_WEEKEND}"/>'
        f'<rect width="3" height="6" fill="{BAR}"/></pattern></defs>')

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;
       margin: 2rem auto; max-width: 1000px; padding: 0 1rem; color: #1d232b; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.1rem; margin-top: 1.6rem; border-bottom: 1px solid #d5dbe3; }
p.meta { color: #4a5563; margin-top: 0; }
p.definition { background: #eef3fa; border-left: 4px solid #2f6db5; padding: .5rem .8rem; }
.big { font-size: 2.2rem; font-weight: 600; }
.up { color: #1b7a36; } .down { color: #b3261e; } .cov { color: #6b5300; }
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


def _legend(items: list[tuple[str, str]], y: float) -> list[str]:
    """Swatches with labels in one line from the right edge: (fill, label)."""
    out, x = [], float(LEFT)
    for fill, label in items:
        out.append(f'<rect x="{x:.0f}" y="{y - 10:.0f}" width="14" height="12" fill="{fill}" '
                   f'stroke="#9aa4b2" stroke-width="0.5"/>')
        out.append(f'<text x="{x + 19:.0f}" y="{y:.0f}">{escape(label)}</text>')
        x += 19 + 7.2 * len(label) + 22
    return out


def chart(r: dict[str, Any]) -> str:
    """The inline SVG bar chart of the rows: not counted rows hatched grey over the whole
    height, partly counted bars striped, imported bars green, annotations marked."""
    rows, unit = r["rows"], r["row_unit"]
    top, step = _nice_top(max((x["visits"] or 0 for x in rows), default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / max(len(rows), 1)
    offsets = unit == "hour" and len({x["utc_offset"] for x in rows}) > 1
    out = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title(r))}: visits per {unit}">',
           f"<title>{escape(title(r))}: visits per {unit}</title>", DEFS]
    for v in range(0, top + 1, step):
        y = TOP + ph - v * ph / top
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,}</text>')
    used: set[str] = set()
    for i, x in enumerate(rows):
        v = x["visits"] or 0
        h = v * ph / top
        bx = LEFT + i * slot + slot * 0.12
        bw = slot * 0.76
        weekend = unit == "day" and x.get("weekday") in WEEKDAYS[5:]
        note = row_note(x)
        tip = f"{x['label']}: " + (f"{v:,} visits" if x["has_data"] else
                                    "not yet" if x["future"] else "not counted")
        tip += f" ({note})" if note and x["has_data"] else ""
        if not x["has_data"] and not x["future"]:
            fill, h = "url(#nc)", ph
            used.add("nc")
        elif x["has_data"] and x["coverage"] < 0.995:
            fill = "url(#pc)"
            used.add("pc")
        elif x["imported"]:
            fill = BAR_IMPORTED
            used.add("imported")
        else:
            fill = BAR_WEEKEND if weekend else BAR
        if x["has_data"] and h < 2:
            h = 2.0  # a counted zero: a line on the axis, told apart from "no figure"
        out.append(f'<rect x="{bx:.1f}" y="{TOP + ph - h:.1f}" width="{bw:.1f}" '
                   f'height="{h:.1f}" fill="{fill}">'
                   f"<title>{escape(tip)}</title></rect>")
        if fill == "url(#pc)":
            out.append(f'<text x="{bx + bw / 2:.1f}" y="{TOP + ph - h - 4:.1f}" text-anchor="middle" '
                       f'font-size="10">{x["coverage"] * 100:.0f} %{" counted" if slot > 70 else ""}</text>')
        if x["notes"]:
            used.add("note")
            cx, cy = bx + bw / 2, TOP + ph - max(h, 0) - 9
            out.append(f'<circle cx="{cx:.1f}" cy="{max(cy, TOP - 4):.1f}" r="5" fill="{MARK}">'
                       f"<title>{escape(x['label'] + ': ' + '; '.join(x['notes']))}</title></circle>")
        first, second = _tick_label(x, unit, offsets)
        cx = LEFT + (i + 0.5) * slot
        out.append(f'<text x="{cx:.1f}" y="{TOP + ph + 16}" text-anchor="middle">{escape(first)}</text>')
        if second:
            out.append(f'<text x="{cx:.1f}" y="{TOP + ph + 30}" text-anchor="middle" '
                       f'font-size="10">{escape(second)}</text>')
    legend = [(BAR, "visits")] + ([(BAR_WEEKEND, "weekend")] if unit == "day" else [])
    legend += [(f, label) for key, f, label in (
        ("pc", "url(#pc)", "partly counted"), ("nc", "url(#nc)", "not counted (no figure)"),
        ("imported", BAR_IMPORTED, "imported history"), ("note", MARK, "annotation (see notes)"))
        if key in used]
    out += _legend(legend, 22)
    axis = {"hour": "hour (local time" + (", UTC offset below)" if offsets else ")"),
            "day": "day", "month": "month"}[unit]
    out += [f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{W - RIGHT}" y2="{TOP + ph}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>',
            f'<text x="{LEFT + pw / 2:.0f}" y="{H - 8}" text-anchor="middle">{escape(axis)}</text>',
            f'<text x="16" y="{TOP + ph / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 16 {TOP + ph / 2:.0f})">visits</text>', "</svg>"]
    return "\n".join(out)


def typical_chart(r: dict[str, Any]) -> str:
    """Average visits by hour of day: weekday and weekend bars side by side, 24 hours."""
    rows = {h: (wd, we) for h, wd, _a, we, _b in typical_rows(r)}
    top, step = _nice_top(max((v or 0 for pair in rows.values() for v in pair), default=0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / 24
    name = f"{escape(title(r))}: a typical day, average visits by hour"
    out = [f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="{name}">', f"<title>{name}</title>"]
    for v in range(0, top + 1, step):
        y = TOP + ph - v * ph / top
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,}</text>')
    kinds = [(k, fill, kind) for k, fill, kind in ((0, BAR, "weekday"), (1, BAR_WEEKEND, "weekend day"))
             if any(pair[k] is not None for pair in rows.values())]
    width = 0.8 / max(len(kinds), 1)
    for h in range(24):
        pair = rows.get(h, (None, None))
        for n, (k, fill, kind) in enumerate(kinds):
            avg = pair[k]
            if avg is None:
                continue
            bh = max(avg * ph / top, 2.0)  # a counted zero: a line on the axis
            bx = LEFT + h * slot + slot * (0.1 + width * n)
            out.append(f'<rect x="{bx:.1f}" y="{TOP + ph - bh:.1f}" width="{slot * width:.1f}" '
                       f'height="{bh:.1f}" fill="{fill}"><title>{h:02d}:00–{h + 1:02d}:00, '
                       f"{kind}: {avg:,} visits on average</title></rect>")
        out.append(f'<text x="{LEFT + (h + 0.5) * slot:.1f}" y="{TOP + ph + 16}" '
                   f'text-anchor="middle">{h:02d}</text>')
    head = typical_head(typical_rows(r))
    out += _legend([(fill, head[k + 1]) for k, fill, _kind in kinds], 22)
    out += [f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{W - RIGHT}" y2="{TOP + ph}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>',
            f'<text x="{LEFT + pw / 2:.0f}" y="{H - 8}" text-anchor="middle">hour of day (local '
            f"time)</text>",
            f'<text x="16" y="{TOP + ph / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 16 {TOP + ph / 2:.0f})">average visits</text>', "</svg>"]
    return "\n".join(out)


def _table(head: list[str], body: list[list[Any]], numeric_from: int = 1,
           row_class: list[str] | None = None, text_last: bool = False) -> str:
    """A table; columns from ``numeric_from`` on are right-aligned (``text_last``: but not the
    last one)."""
    def cell(tag: str, i: int, v: Any) -> str:
        numeric = i >= numeric_from and not (text_last and i == len(head) - 1)
        cls = ' class="n"' if numeric else ""
        return f"<{tag}{cls}>{escape(str(v))}</{tag}>"

    out = ["<table>", "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>"]
    for k, row in enumerate(body):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        out.append(f"<tr{cls}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_html(r: dict[str, Any]) -> str:
    t, c, a = r["totals"], r["comparison"], r["averages"]
    headline = headline_change(r)
    trend = "" if headline is None else (
        f' <span class="{"up" if c["change_pct"] >= 0 else "down"}">{escape(headline)}</span>')
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title(r))}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{escape(title(r))}</h1>",
        f'<p class="meta">{escape(period_text(r))}; sensors: '
        f'{escape(", ".join(r["sensors"]) or "none")}; '
        f'generated {escape(r["generated_at"][:16].replace("T", " "))}</p>',
        f'<p class="definition">{escape(r["definition"])}</p>',
        f'<p><span class="big">{num(t["visits"])}</span> visits{trend}'
        + (f' <span class="cov">({escape(coverage_text(r))})</span>'
           if r["has_data"] and coverage_text(r) else "") + "</p>",
    ]
    if r["has_data"]:
        parts.append(chart(r))
    else:
        parts.append(f"<p><strong>No counts for {escape(r['label'])}.</strong></p>")
    parts.append("<h2>Summary</h2>")
    parts.append("<ul>" + "".join(f"<li>{escape(line)}</li>" for line in summary_lines(r)) + "</ul>")
    parts.append("<h2>Comparisons</h2>")
    parts.append(_table(["compared with", "span", "what was compared", "visits then → now (change)"],
                        [[x["description"], x["label"],
                          (x["compared"] or "–") if not x["like_for_like"] else
                          ("the same part" if x["partial"] else "the whole span"),
                          change_text(x)]
                         for x in r["comparisons"]], numeric_from=9))
    parts.append("<h2>Averages</h2>")
    parts.append(_table(["days", "average visits", "days counted in full"],
                        [["weekday (Mon–Fri)", num(a["weekday"]["visits"]), a["weekday"]["days"]],
                         ["weekend day (Sat–Sun)", num(a["weekend"]["visits"]), a["weekend"]["days"]],
                         *[[k, num(v["visits"]), v["days"]] for k, v in a["by_weekday"].items()
                           if v["days"]]]))
    typ = typical_rows(r)
    if typ:
        parts.append("<h2>A typical day</h2>")
        parts.append("<p>Average visits by hour of day (local time) over the completed days, "
                     "weekdays and weekend days apart; an hour counts on a day where it was "
                     "counted in full.</p>")
        parts.append(typical_chart(r))
        cols = [k for k in (1, 3) if any(x[k] is not None for x in typ)]
        parts.append(_table(["hour", *(typical_head(typ)[(k + 1) // 2] for k in cols)],
                            [[f"{x[0]:02d}:00–{x[0] + 1:02d}:00", *(num(x[k]) for k in cols)]
                             for x in typ]))
    if len(t["by_sensor"]) > 1:
        then = (f"{c['label']}, over the same time" if c["visits"] is not None
                else f"{c['label']} (not compared)")
        parts.append("<h2>Sensors</h2>")
        parts.append(_table(["sensor", f"visits, {r['label']}", f"visits, {then}"],
                            [[s, num(v), num(c["by_sensor"].get(s) if c["visits"] is not None else None)]
                             for s, v in t["by_sensor"].items()]))
    if r.get("feedback"):
        parts.append(feedback_html({**r["feedback"], "row_unit": r["row_unit"]}))
    notes = note_lines(r)
    if notes:
        parts.append("<h2>Notes</h2>")
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    many = len(r["sensors"]) > 1
    parts.append(f"<h2>Visits per {escape(r['row_unit'])}</h2>")
    parts.append(_table([r["row_unit"], "visits", *(r["sensors"] if many else []), "notes"],
                        [[x["label"], num(x["visits"]) if not x["future"] else "",
                          *([num(v) if not x["future"] else "" for v in x["by_sensor"].values()]
                            if many else []), row_note(x)]
                         for x in r["rows"]],
                        numeric_from=1, text_last=True,
                        row_class=["" if x["has_data"] else "nodata" for x in r["rows"]]))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
