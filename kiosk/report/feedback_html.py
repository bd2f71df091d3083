"""The HTML of a report's visitor-feedback section: the figures with their definitions and
an inline SVG stacked bar chart of the answers per level (one ``<rect>`` per level and row,
each with a ``<title>`` tooltip), best level at the bottom.  No scripts, like the rest of the
report."""

from __future__ import annotations

from html import escape
from typing import Any

from kiosk.report.feedback import MIN_ANSWERS, TOO_FEW

#: Colours from the best level (green) to the worst (red), for up to five levels.
LEVEL_COLOURS = ("#1b7a36", "#7cb342", "#c9a227", "#e07b39", "#b3261e")
W, H = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 40, 48


def level_colour(rank: int, scale: int) -> str:
    """The colour of the level of ``rank`` (0 = best) on a ``scale``-level terminal."""
    if scale <= 1:
        return LEVEL_COLOURS[0]
    return LEVEL_COLOURS[round(rank * (len(LEVEL_COLOURS) - 1) / (scale - 1))]


def _name(level: str) -> str:
    return level.replace("_", " ")


def feedback_chart(f: dict[str, Any]) -> str:
    """The stacked bar chart: per row, the answers of each level stacked best first."""
    rows, levels, scale = f["rows"], f["levels"], max(f["scale"], 2)
    top = max((sum(r["answers"].values()) for r in rows), default=0)
    top = max(top, 1)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    step = plot_w / max(len(rows), 1)
    out = [f'<svg class="feedback-chart" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="answers per level and {escape(f.get("row_unit", "row"))}">',
           f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{W - RIGHT}" '
           f'y2="{TOP + plot_h}"/>',
           f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{top}</text>',
           f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>']
    x = float(LEFT)
    for lv in levels:  # legend
        label = _name(lv["level"])
        out.append(f'<rect x="{x:.0f}" y="{TOP - 26}" width="14" height="12" '
                   f'fill="{level_colour(lv["rank"], scale)}"/>')
        out.append(f'<text x="{x + 19:.0f}" y="{TOP - 16}">{escape(label)}</text>')
        x += 19 + 7.2 * len(label) + 22
    for i, r in enumerate(rows):
        bx = LEFT + i * step + step * 0.15
        y = float(TOP + plot_h)
        for lv in levels:
            n = r["answers"].get(lv["level"], 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            out.append(f'<rect class="level-{escape(lv["level"])}" x="{bx:.1f}" y="{y:.1f}" '
                       f'width="{step * 0.7:.1f}" height="{h:.1f}" '
                       f'fill="{level_colour(lv["rank"], scale)}"><title>{escape(r["label"])}: '
                       f'{n} {escape(_name(lv["level"]))}</title></rect>')
        if len(rows) <= 31 or i % 2 == 0:
            out.append(f'<text x="{bx + step * 0.35:.1f}" y="{TOP + plot_h + 16}" '
                       f'text-anchor="middle">{escape(r["label"].split()[-1][:5])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def feedback_html(f: dict[str, Any] | None) -> str:
    """The section (empty without feedback terminals)."""
    if f is None:
        return ""
    d = f["definitions"]
    parts = ["<h2>Visitor feedback</h2>",
             f'<p class="meta">Terminals: {escape(", ".join(f["terminals"]))}</p>']
    if f["too_few"]:
        figures = (f"<p><span class=\"big\">{f['answers']:,}</span> answers: share positive "
                   f"and mean score {escape(TOO_FEW)}</p>")
    else:
        figures = (f"<p><span class=\"big\">{f['mean_score']:.1f}</span> mean score (0–100) · "
                   f"<span class=\"big\">{f['share_positive_pct']:.1f} %</span> positive · "
                   f"{f['answers']:,} answers</p>")
    parts.append(figures)
    if f["answers"]:
        parts.append(feedback_chart(f))
    rate = f["response_rate"]
    low = f["lowest_hours"]
    c = f["comparison"]
    items = [
        ("Answers per level", ("; ".join(f"{_name(lv['level'])} {lv['answers']:,}"
                                         for lv in f["levels"]) or "none")
         + f" (repeated presses, left out: {f['repeated']:,})", d["answers"]),
        ("Share positive", TOO_FEW if f["too_few"] else f"{f['share_positive_pct']:.1f} %",
         d["share_positive"]),
        ("Mean score", TOO_FEW if f["too_few"] else f"{f['mean_score']:.1f} / 100",
         d["mean_score"]),
        ("Response rate", f"{rate:.1f} answers per 100 visits ({f['visits']:,} visits)"
         if rate is not None else "no visits counted", d["response_rate"]),
        ("Lowest-score hours", "; ".join(f"{h['hour']}: {h['mean_score']:.1f} "
                                         f"({h['answers']} answers)" for h in low)
         or f"no hour with at least {MIN_ANSWERS} answers", d["lowest_hours"]),
        (f"Compared with {c['description']} ({c['label']})", c["text"], d["comparison"]),
    ]
    parts.append('<table class="feedback"><tr><th>figure</th><th>value</th>'
                 '<th>definition</th></tr>' + "".join(
                     f"<tr><td>{escape(a)}</td><td>{escape(b)}</td><td>{escape(c_)}</td></tr>"
                     for a, b, c_ in items) + "</table>")
    return "\n".join(parts)
