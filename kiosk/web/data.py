"""What the dashboard shows, from the same code as the CLI: the thin adapter between the
pages and :mod:`kiosk.report`, :mod:`kiosk.status`, :mod:`kiosk.journal` and
:mod:`kiosk.annotations`.

Everything here reads a :class:`~kiosk.store.Store` the caller opened read-only for one
request and returns plain dicts for the templates.  Where the report code is being
reworked (like-for-like comparisons, the health summary of ``kiosk status``, the one
"now" of every reading command), the functions below use the new API when it is there
and the current one otherwise, so the pages follow the CLI without changes.
"""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from kiosk import status as status_mod
from kiosk.exc import ExportError
from kiosk.report import compute
from kiosk.report.text import change_text

if TYPE_CHECKING:
    from kiosk.config import Config
    from kiosk.store import Store

#: Reports are refused for dates before this, and for dates more than a year ahead: a
#: typo, not a question (and far dates would make the SQL scan nothing slowly).
FIRST_REPORT_DATE = date(1990, 1, 1)
MAX_AHEAD_DAYS = 366


def present(store: Store, real_now: float) -> float:
    """The "now" of the figures (UTC s): the same as ``kiosk report`` and ``kiosk status``
    use (an accelerated demo's database has its own present)."""
    store_now = getattr(status_mod, "store_now", None)
    if store_now is not None:
        return float(store_now(store, real_now=real_now))
    daemon = store.meta("daemon") or {}
    if daemon.get("speed", 1) != 1:  # as kiosk/cli/report.py does
        last = store.latest_last_seen()
        return max(real_now, last or real_now)
    return real_now


def report(store: Store, cfg: Config | None, tz: ZoneInfo, *, span: str, date_text: str | None,
           sensors: list[str] | None, now: float) -> dict[str, Any]:
    """``kiosk report SPAN DATE --format json`` as a dict.  Raises ExportError for a span,
    date or sensor it cannot report (the pages answer 4xx with its message)."""
    if span not in compute.SPANS:
        raise ExportError(f"unknown span {span!r}; expected one of {', '.join(compute.SPANS)}")
    day = compute.parse_report_date(date_text, span, tz, now=now)
    today = datetime.fromtimestamp(now, tz).date()
    if day < FIRST_REPORT_DATE or day > today + timedelta(days=MAX_AHEAD_DAYS):
        raise ExportError(f"no reports for {day.isoformat()}: choose a date from "
                          f"{FIRST_REPORT_DATE.isoformat()} to a year from today")
    return compute.build_report(store, span=span, date=day, tz=tz, now=now,
                                visits=cfg.report.visits if cfg else "in",
                                sensors=sensors or None, site=cfg.device.site if cfg else None)


def report_body(r: dict[str, Any]) -> str:
    """The body of ``kiosk report --format html``: the same figures, definitions, notes and
    chart, to embed in a dashboard page (its scripts-free HTML is escaped by the renderer)."""
    from kiosk.report.html import render_html

    page = render_html(r)
    start, end = page.find("<body>"), page.rfind("</body>")
    if start < 0 or end < start:
        raise RuntimeError("the HTML report has no <body>; kiosk.web.data.report_body needs updating")
    return page[start + len("<body>"):end]


def neighbours(r: dict[str, Any]) -> tuple[str, str]:
    """Dates (ISO) inside the span before and the span after the report's."""
    first, last = date.fromisoformat(r["first_day"]), date.fromisoformat(r["last_day"])
    return (first - timedelta(days=1)).isoformat(), (last + timedelta(days=1)).isoformat()


def comparison(c: dict[str, Any]) -> dict[str, Any]:
    """One comparison of a report, in the CLI's words (``change_text``), with the old and
    the reworked comparison fields both understood."""
    return {"description": c["description"], "label": c["label"], "visits": c["visits"],
            "change": c.get("change"), "change_pct": c.get("change_pct"),
            "text": change_text(c), "by_sensor": c.get("by_sensor") or {},
            "compared": c.get("compared"), "reason": c.get("reason"),
            "partial": c.get("partial", False)}


def change_only(c: dict[str, Any]) -> str:
    """``+611 (+3.1 %)``: the change of a comparison without the earlier figure; the CLI's
    words (no counts, no change computed) when there is none."""
    if c.get("change") is not None and c.get("change_pct") is not None:
        return f"{c['change']:+,} ({c['change_pct']:+.1f} %)".replace("-", "\u2212")
    return str(c.get("text") or change_text(c))


def now_page(store: Store, cfg: Config | None, tz: ZoneInfo, *, now: float) -> dict[str, Any]:
    """Everything the Now page shows: today's report (as ``kiosk report day today``) and
    the state (as ``kiosk status``), plus the disk and the problems in words."""
    rep = report(store, cfg, tz, span="day", date_text="today", sensors=None, now=now)
    info = status_mod.collect(store, tz=tz, config=cfg, now=now)
    head = comparison(rep["comparison"])
    by_state = {s["sensor_id"]: s for s in info["sensors"]}
    sensors = []
    for sid in sorted(set(rep["totals"]["by_sensor"]) | set(by_state)):
        s = by_state.get(sid, {})
        sensors.append({"id": sid, "visits": rep["totals"]["by_sensor"].get(sid),
                        "then": head["by_sensor"].get(sid) if head["visits"] is not None else None,
                        "state": s.get("state", "no state"), "message": s.get("message"),
                        "last_pulse": s.get("last_pulse"), "in": s.get("today_in"),
                        "out": s.get("today_out"), "kind": s.get("kind")})
    d = info["daemon"]
    return {"report": rep, "status": info, "comparison": head, "sensors": sensors,
            "uptime_s": _age(d.get("started_at"), now) if d["state"] != "stopped" else None,
            "disk": disk(store.path), "problems": problems(info),
            "updated": datetime.fromtimestamp(now, tz).strftime("%H:%M:%S")}


def _age(iso: str | None, now: float) -> float | None:
    return None if not iso else max(0.0, now - datetime.fromisoformat(iso).timestamp())


def disk(db_path: str) -> dict[str, Any]:
    """Free and total bytes of the file system holding the database."""
    try:
        u = shutil.disk_usage(os.path.dirname(os.path.abspath(db_path)))
    except OSError:
        return {"free": None, "total": None, "free_pct": None}
    return {"free": u.free, "total": u.total, "free_pct": round(100 * u.free / u.total, 1)}


def problems(info: dict[str, Any]) -> list[str]:
    """What needs a person, in words (``kiosk status``'s health when it has one)."""
    out: list[str] = list((info.get("health") or {}).get("problems") or [])
    if not info.get("health"):
        d = info["daemon"]
        if d["state"] != "running":
            out.append(f"counter {d['state']}")
        bad = [f"{s['sensor_id']} {s['state']}" for s in info["sensors"]
               if s["state"] in ("down", "stuck")]
        if bad:
            out.append("sensor " + ", ".join(bad))
        if (info.get("upload") or {}).get("paused"):
            out.append("uploads paused")
    if (info.get("clock") or {}).get("set") is False:
        out.append("clock not set yet (waiting for NTP)")
    return out


def duration(seconds: float | None) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``40 s``."""
    if seconds is None:
        return "–"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min" if m else f"{s} s"


def size(n: float | None) -> str:
    """``1.2 GB``."""
    if n is None:
        return "–"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def when(iso: str | None) -> str:
    """``2026-12-03 09:14`` from a local ISO time (``–`` for none)."""
    return iso[:16].replace("T", " ") if iso else "–"
