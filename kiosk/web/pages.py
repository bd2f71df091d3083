"""The reading pages: Now (and its live part), Reports (and their downloads), Journal."""

from __future__ import annotations

import math
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, url_for

from kiosk.exc import ExportError
from kiosk.report.compute import SPANS
from kiosk.web import data, settings, store

JOURNAL_PAGE = 50     #: Journal entries per page.
MAX_JOURNAL_PAGES = 200
LEVELS = ("debug", "info", "warning", "error")


def _now_view() -> dict[str, Any]:
    s = settings()
    st = store()
    return data.now_page(st, s.config, s.tz, now=data.present(st, s.clock()))


def _sensors_arg() -> list[str]:
    """``?sensor=`` values; an unknown one is refused with 404."""
    wanted = [v for v in request.args.getlist("sensor") if v]
    if not wanted:
        return []
    known = set(store().sensor_ids())
    if s := settings().config:
        known |= {x.id for x in s.sensors}
    unknown = sorted(set(wanted) - known)
    if unknown:
        abort(404, f"there is no sensor {', '.join(repr(u[:64]) for u in unknown)} here; sensors: "
                   f"{', '.join(sorted(known)) or 'none yet'}")
    return wanted


def register(app: Flask) -> None:
    @app.get("/")
    def now() -> str:
        return render_template("now.html", v=_now_view(), page="now")

    @app.get("/now/live")
    def now_live() -> str:
        """The part of the Now page that the page's script replaces every few seconds."""
        return render_template("_live.html", v=_now_view())

    @app.get("/now.json")
    def now_json() -> Response:
        v = _now_view()
        return jsonify({"report": v["report"], "status": v["status"], "disk": v["disk"],
                        "problems": v["problems"]})

    @app.get("/report")
    def report_index() -> Any:
        return redirect(url_for("report", span="day"))

    @app.get("/report/<span>")
    def report(span: str) -> str:
        r = _report(span)
        prev, nxt = data.neighbours(r)
        return render_template("report.html", r=r, body=data.report_body(r), span=span,
                               spans=SPANS, prev=prev, next=nxt, page="report",
                               date_arg=request.args.get("date", ""),
                               sensors=request.args.getlist("sensor"))

    @app.get("/report/<span>.<fmt>")
    def report_download(span: str, fmt: str) -> Response:
        from kiosk.report import RENDERERS

        if fmt not in ("csv", "html", "json"):
            abort(404, f"no {fmt!r} download; choose csv, html or json")
        r = _report(span)
        mime = {"csv": "text/csv", "html": "text/html", "json": "application/json"}[fmt]
        resp = Response(RENDERERS[fmt](r), mimetype=mime)
        resp.headers["Content-Disposition"] = (
            f'attachment; filename="kiosk-report-{span}-{r["key"]}.{fmt}"')
        return resp

    @app.get("/journal")
    def journal() -> str:
        return render_template("journal.html", page="journal", **_journal())


def _report(span: str) -> dict[str, Any]:
    if span not in SPANS:
        abort(404, f"there is no {span[:20]!r} report; choose day, week, month or year")
    s = settings()
    st = store()
    text = request.args.get("date") or None
    if text is not None and len(text) > 20:
        raise ExportError("that date is too long; use e.g. 2026-11-24, 2026-11 or 2026-W48")
    return data.report(st, s.config, s.tz, span=span, date_text=text, sensors=_sensors_arg(),
                       now=data.present(st, s.clock()))


def _journal() -> dict[str, Any]:
    from kiosk.journal import KINDS, local_text, parse_when, query

    s = settings()
    st = store()
    now = data.present(st, s.clock())
    a = request.args
    level = a.get("level", "") or ""
    if level and level not in LEVELS:
        abort(400, f"unknown level {level[:20]!r}; choose {', '.join(LEVELS)}")
    kind = a.get("kind", "") or ""
    if kind and kind not in KINDS:
        abort(400, f"unknown kind {kind[:40]!r}; choose one of {', '.join(KINDS)}")
    sensors = _sensors_arg()
    since_text, until_text = a.get("since") or "7d", a.get("until") or ""
    for t in (since_text, until_text):
        if len(t) > 40:
            raise ExportError("that time is too long; use e.g. 24h, 7d, 2026-11-22 or 2026-11-22T09:00")
    since = parse_when(since_text, s.tz, now=now)
    until = parse_when(until_text, s.tz, now=now) if until_text else None
    if until is not None and until <= since:
        raise ExportError(f"'until' ({until_text}) must be after 'since' ({since_text})")
    try:
        page = int(a.get("page", "1"))
    except ValueError:
        abort(400, "page must be a number")
    if not 1 <= page <= MAX_JOURNAL_PAGES:
        abort(404, f"there is no page {page}; narrow the time instead")
    rows, total = query(st, since=since, until=until, min_level=level or None, sensors=sensors,
                        kinds=[kind] if kind else [], limit=page * JOURNAL_PAGE)
    pages = max(1, math.ceil(total / JOURNAL_PAGE))
    if page > pages:
        abort(404, f"there is no page {page}: {total} entries make {pages} page(s)")
    newest_first = rows[::-1][(page - 1) * JOURNAL_PAGE:page * JOURNAL_PAGE]
    entries = [{**e, "time": local_text(e["ts"], s.tz), "level": e["level"].upper()}
               for e in newest_first]
    known = sorted(set(st.sensor_ids()) | {x.id for x in (s.config.sensors if s.config else ())})
    args = {k: v for k, v in (("level", level), ("kind", kind), ("since", a.get("since", "")),
                              ("until", until_text)) if v}
    if sensors:
        args["sensor"] = sensors[0]
    return {"entries": entries, "total": total, "pg": page, "pages": min(pages, MAX_JOURNAL_PAGES),
            "levels": LEVELS, "kinds": KINDS, "known": known, "level": level, "kind": kind,
            "sensor": sensors[0] if sensors else "", "since": a.get("since", ""), "until": until_text,
            "args": args, "since_text": local_text(since, s.tz, seconds=False)}
