"""``kiosk status``: what the counter is doing, read from the database alone.

Its exit status is for monitoring (like ``systemctl is-active``): :class:`StatusCode`.
"""

from __future__ import annotations

import re
import textwrap
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

from kiosk.config import FEEDBACK_TYPES, Config
from kiosk.feedback import silent_day
from kiosk.periods import iso_local, local_midnight
from kiosk.store import Store, pid_alive
from kiosk.store.health import read_health

STALL_HEARTBEATS = 3  #: Heartbeats missed (plus 10 s) before a live daemon counts as stalled.


class StatusCode(IntEnum):
    """Exit status of ``kiosk status``; when several apply, the first in this order wins
    (stopped, writes failing, stalled, sensor, uploads).  1 and 2 stay for errors."""

    OK = 0                #: the daemon runs, writes, every sensor works, uploads flow (or none)
    STOPPED = 3           #: the daemon is not running (stopped, crashed, never started)
    STALLED = 4           #: the daemon's process is alive but has not written for too long
    WRITES_FAILING = 5    #: the daemon runs but cannot write the database (disk full, ...)
    SENSOR_FAULT = 6      #: a sensor is down or stuck
    UPLOADS_PAUSED = 7    #: uploads are paused (e.g. the server refused the token)


_PRECEDENCE = (StatusCode.STOPPED, StatusCode.WRITES_FAILING, StatusCode.STALLED,
               StatusCode.SENSOR_FAULT, StatusCode.UPLOADS_PAUSED)


def store_now(store: Store, *, real_now: float) -> float:
    """The present for the figures of ``store`` (UTC s), the same for every reading command.

    The real clock, except for a database an accelerated demo wrote: then the demo's clock
    at its last write (so ``status``, ``report``, ``export`` and ``log`` agree on "today").
    """
    daemon = store.meta("daemon") or {}
    if float(daemon.get("speed", 1) or 1) != 1:
        last = store.latest_last_seen()
        if last is not None:
            return float(last)
    return real_now


def health(info: dict[str, Any]) -> tuple[StatusCode, list[str]]:
    """(exit status, problems in words) of :func:`collect`'s result."""
    found: dict[StatusCode, str] = {}
    d = info["daemon"]
    if d["state"] in ("stopped", "never started"):
        found[StatusCode.STOPPED] = f"daemon {d['state']}"
    elif d["state"] == "stalled":
        found[StatusCode.STALLED] = f"daemon stalled (no write for {d['last_write_age_s']:.0f} s)"
    elif d["state"] == "writes failing":
        found[StatusCode.WRITES_FAILING] = "daemon cannot write the database"
    bad = [f"{s['sensor_id']} {s['state']}" for s in info["sensors"] if s["state"] in ("down", "stuck")]
    bad += [f"{s['sensor_id']} silent on {s['silent_day']['date']} while "
            f"{s['silent_day']['visits']:,} visits were counted"
            for s in info["sensors"] if s.get("silent_day")]
    if bad:
        found[StatusCode.SENSOR_FAULT] = "sensor " + ", ".join(bad)
    if (info.get("upload") or {}).get("paused"):
        found[StatusCode.UPLOADS_PAUSED] = "uploads paused"
    codes = [c for c in _PRECEDENCE if c in found]
    return (codes[0] if codes else StatusCode.OK), [found[c] for c in codes]


def collect(store: Store, *, tz: ZoneInfo, config: Config | None, now: float) -> dict[str, Any]:
    """Everything ``kiosk status`` shows, as a JSON-able dict (times as local ISO strings).

    ``now`` is :func:`store_now` (UTC s)."""
    daemon = store.meta("daemon") or {}
    runs = store.last_run()
    last_seen = runs[1] if runs else None
    stopped = runs[2] is not None if runs else True
    running = (not stopped) and pid_alive(daemon.get("pid"))
    # the daemon records its heartbeat period (s); three missed heartbeats is a stall
    heartbeat = daemon.get("heartbeat_s")
    if running and daemon.get("speed", 1) == 1 and last_seen is not None and heartbeat \
            and now - last_seen > STALL_HEARTBEATS * float(heartbeat) + 10:
        state = "stalled"
    elif running:
        state = "running"
    else:
        state = "stopped" if runs else "never started"
    failing = writes_failing(store.path, daemon.get("pid")) if running else None
    if failing is not None:
        state = "writes failing"
    today = local_midnight(datetime.fromtimestamp(now, tz).date(), tz)
    tomorrow = local_midnight(datetime.fromtimestamp(today, tz).date() + timedelta(days=1), tz)
    today_totals = store.totals_between(today, tomorrow)
    sensors = []
    configured = {s.id: s.type for s in config.sensors} if config else {}
    rows = {r["sensor_id"]: r for r in store.sensor_rows()}
    for sid in sorted(set(rows) | set(configured)):
        r = rows.get(sid, {})
        i, o = today_totals.get(sid, (0, 0))
        sensors.append({
            "sensor_id": sid,
            "kind": r.get("kind") or configured.get(sid),
            "state": (r.get("state") or "never seen") if running else "not running",
            "last_state": r.get("state"),
            "state_since": _local(r.get("state_since"), tz),
            "message": r.get("message"),
            "last_pulse": _local(r.get("last_pulse"), tz),
            "today_in": i,
            "today_out": o,
            "rejected_lines": r.get("rejected_lines", 0),
            "configured": sid in configured if config else None,
        })
        if (r.get("kind") or configured.get(sid)) in FEEDBACK_TYPES:
            sensors[-1].update(_terminal_info(store, sid, tz, now, today, tomorrow))
    info: dict[str, Any] = {
        "device": ({"id": config.device.id, "site": config.device.site,
                    "timezone": config.device.timezone} if config else None),
        "daemon": {
            "state": state,
            "pid": daemon.get("pid"),
            "version": daemon.get("version"),
            "started_at": _local(daemon.get("started_at"), tz),
            "last_write": _local(last_seen, tz),
            # never negative: a clock set back after the write reads as "just now"
            "last_write_age_s": round(max(0.0, now - last_seen), 1) if last_seen else None,
            "stop_reason": runs[3] if runs else None,
            "speed": daemon.get("speed", 1),
            "last_error": daemon.get("last_error"),
            "writes_failing": (None if failing is None else {
                "since": _local(failing.get("since"), tz),
                "for_s": round(now - float(failing.get("since") or now), 1),
                "error": failing.get("error"),
                "held_in": (failing.get("held") or {}).get("visitors_in", 0),
                "held_out": (failing.get("held") or {}).get("visitors_out", 0),
                "updated": _local(failing.get("updated_at"), tz),
            }),
        },
        "today": {"date": datetime.fromtimestamp(today, tz).date().isoformat(),
                  "in": sum(v[0] for v in today_totals.values()),
                  "out": sum(v[1] for v in today_totals.values())},
        "pending": {
            "unflushed_queue_depth": daemon.get("queue_depth", 0),
            "flush_interval_s": daemon.get("flush_interval_s"),
        },
        "sensors": sensors,
        "database": {"path": store.path, "bytes": store.size_bytes()},
        "clock": _clock_info(store, running),
        "upload": _upload_info(store, tz, config, running=running),
    }
    code, problems = health(info)
    info["health"] = {"exit_code": int(code), "state": code.name.lower().replace("_", " "),
                      "problems": problems}
    return info


def writes_failing(db_path: str, pid: int | None) -> dict[str, Any] | None:
    """The running daemon's "writes are failing" record from the health file, or None.

    The daemon puts it there (not in the database, which it cannot write) and clears it when
    a write succeeds again; a record left by another process is ignored.
    """
    record = read_health(db_path).get("writes_failing")
    if not isinstance(record, dict) or (pid is not None and record.get("pid") != pid):
        return None
    return record


def _terminal_info(store: Store, sid: str, tz: ZoneInfo, now: float, today: float,
                   tomorrow: float) -> dict[str, Any]:
    """A feedback terminal's answers today and the latest silent day (see
    :func:`kiosk.feedback.silent_day`)."""
    rows = store.feedback_rows(today, tomorrow, [sid])
    silent = silent_day(store, sid, tz, now)
    return {"answers_today": {r.level: r.answers for r in rows},
            "repeated_today": sum(r.repeated for r in rows),
            "silent_day": None if silent is None else {"date": silent.day.isoformat(),
                                                       "visits": silent.visits}}


def _clock_info(store: Store, running: bool) -> dict[str, Any]:
    """The daemon's view of the wall clock, and the pulses waiting for it to be set."""
    clock = store.meta("clock") or {}
    waiting = (0, 0) if "m006_unplaced_pulses" in store.pending_migrations \
        else store.unplaced_summary()
    return {"setting": clock.get("setting", "ntp"),
            "set": clock.get("trusted", True) if running else None,
            "waiting_pulses": waiting[0] + int(clock.get("unplaced_in_memory", 0) if running else 0),
            "waiting_visitors": waiting[1]}


def _upload_info(store: Store, tz: ZoneInfo, config: Config | None, *,
                 running: bool) -> dict[str, Any] | None:
    """Last success, next attempt (None while the daemon is not running), backlog, last
    error and pause state of uploads."""
    if not store.has_outbox():
        return None
    state = store.meta("upload") or {}
    backlog = store.backlog()
    configured = config.upload is not None if config else None
    if configured is False and not state:
        return {"configured": False}
    return {
        "configured": configured,
        "url": config.upload.url if config and config.upload else None,
        "last_success": _local(state.get("last_success_at"), tz),
        "next_attempt": _local(state.get("next_attempt_at"), tz) if running else None,
        "daemon_running": running,
        "paused": bool(state.get("paused")),
        "last_error": state.get("last_error"),
        "last_error_at": _local(state.get("last_error_at"), tz),
        "backlog_periods": backlog.pending,
        "oldest_unsent": _local(backlog.oldest, tz),
        "sent_periods": backlog.sent,
        "quarantined_periods": backlog.quarantined,
    }


def _local(ts: float | None, tz: ZoneInfo) -> str | None:
    return iso_local(ts, tz) if ts else None


def _short(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


ELLIPSIS = "…"
INDENT = " " * 10  #: continuation lines line up under the value column


def render(info: dict[str, Any], *, width: int = 100) -> str:
    """The human-readable form of :func:`collect`'s result, at most ``width`` characters
    a line: long lines wrap under their value, long sensor messages are cut with an
    ellipsis (``--json`` keeps them whole)."""
    from tabulate import tabulate

    width = max(width, 40)
    lines: list[str] = []
    dev = info["device"]
    if dev:
        lines.append(f"kiosk {dev['id']} at {dev['site']} ({dev['timezone']})")
    d = info["daemon"]
    if d["state"] == "running":
        speed = f", clock x{d['speed']:g}" if d["speed"] != 1 else ""
        lines.append(f"daemon:   running (pid {d['pid']}, version {d['version']}, since "
                     f"{_short(d['started_at'])}, last heartbeat {_age(d['last_write_age_s'])}{speed})")
    elif d["state"] == "writes failing":
        f = d["writes_failing"]
        lines.append(f"daemon:   running (pid {d['pid']}), but WRITES FAIL since {_short(f['since'])} "
                     f"({f['for_s']:.0f} s): {f['error']}")
        lines.append(f"          {f['held_in']} in, {f['held_out']} out held in memory (as of "
                     f"{_short(f['updated'])}); they are written when there is room, lost if the "
                     f"daemon stops first")
    elif d["state"] == "stalled":
        lines.append(f"daemon:   STALLED: pid {d['pid']} alive but no heartbeat for "
                     f"{d['last_write_age_s']:.0f} s; check `journalctl -u kiosk`")
    else:
        lines.append(f"daemon:   {d['state'].upper()}" + (
            f" (last write {_short(d['last_write'])}, stopped by "
            f"{d['stop_reason'] or 'a crash or power cut'})" if d["last_write"] else ""))
    if d.get("last_error") and d["state"] != "writes failing":
        lines.append(f"          last write error: {d['last_error']}")
    t = info["today"]
    lines.append(f"today:    {t['in']} in, {t['out']} out ({t['date']}, local time)")
    p = info["pending"]
    if d["state"] in ("running", "writes failing"):
        lines.append(f"pending:  at most {p['flush_interval_s']} s of counts in memory "
                     f"(queue depth at last heartbeat: {p['unflushed_queue_depth']})")
    db = info["database"]
    lines.append(f"database: {db['path']} ({_size(db['bytes'])})")
    c = info["clock"]
    if c["set"] is False:
        lines.append(f"clock:    NOT SET yet (waiting for NTP since boot; [device] clock = "
                     f"\"{c['setting']}\"): {c['waiting_pulses']} pulse message(s) wait to be "
                     f"placed in their hours; they are counted and kept")
    elif c["waiting_pulses"]:
        lines.append(f"clock:    {c['waiting_pulses']} pulse message(s) from a boot without a set "
                     f"clock wait to be placed (at the next start with a set clock)")
    for s in info["sensors"]:
        if "answers_today" in s:
            levels = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["answers_today"].items())
            lines.append(f"answers:  {s['sensor_id']}: {sum(s['answers_today'].values())} today"
                         + (f" ({levels})" if levels else "")
                         + (f", {s['repeated_today']} repeated press(es) left out"
                            if s["repeated_today"] else ""))
            if s["silent_day"]:
                lines.append(f"          SILENT on {s['silent_day']['date']}: not one press "
                             f"while {s['silent_day']['visits']:,} visits were counted (a "
                             f"loose button cable?)")
    lines.extend(_render_upload(info.get("upload")))
    h = info.get("health")
    if h:
        lines.append(f"health:   {'all well' if not h['problems'] else '; '.join(h['problems'])} "
                     f"(exit status {h['exit_code']})")
    out = [w for line in lines for w in _wrap(line, width)]
    out.append("")
    out.append(_sensor_table(info["sensors"], width, tabulate, info["today"]["date"]))
    return "\n".join(out)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s ago"


def _wrap(line: str, width: int) -> list[str]:
    """``line`` wrapped at ``width``, continuation lines indented under the value column."""
    if len(line) <= width:
        return [line]
    glued = re.sub(r"(\d) s ago", "\\1\u00a0s\u00a0ago", line)  # "12 s ago" stays on one line
    return [w.replace("\u00a0", " ") for w in textwrap.wrap(
        glued, width, subsequent_indent=INDENT, break_on_hyphens=False,
        break_long_words=False)] or [line]  # a path stays whole, to copy


def cut(text: str, room: int) -> str:
    """``text`` in at most ``room`` characters, cut with an ellipsis."""
    return text if len(text) <= room else text[:max(room - 1, 0)].rstrip() + ELLIPSIS


MESSAGE_LINES = 2  #: lines a sensor message below a narrow table may take before "…"


def _sensor_table(sensors: list[dict[str, Any]], width: int, tabulate: Any, today: str) -> str:
    head = ["sensor", "kind", "state", "last pulse", "in today", "out today", "rejected"]
    rows = [[s["sensor_id"], s["kind"] or "-", s["state"], _pulse(s["last_pulse"], today),
             s["today_in"], s["today_out"], s["rejected_lines"]] for s in sensors]
    messages = [s["message"] or "" for s in sensors]
    base = tabulate(rows, headers=head)
    room = width - max((len(x) for x in base.splitlines()), default=0) - 2
    if not any(messages):
        return base
    if room >= 16:
        return tabulate([[*r, cut(m, room)] for r, m in zip(rows, messages, strict=True)],
                        headers=[*head, "last message"])
    notes = []
    for s, m in zip(sensors, messages, strict=True):
        if m:
            lines = _wrap(f"{s['sensor_id']}: {m}", width)
            if len(lines) > MESSAGE_LINES:  # --json has the whole message
                lines = lines[:MESSAGE_LINES]
                lines[-1] = lines[-1][:width - 1].rstrip() + ELLIPSIS
            notes += lines
    return base + "\n" + "\n".join(notes)


def _pulse(iso: str | None, today: str) -> str:
    """``09:59:32`` for a time today, else ``2026-11-23 09:09``."""
    if not iso:
        return "-"
    return iso[11:19] if iso[:10] == today else iso[:16].replace("T", " ")


def _render_upload(u: dict[str, Any] | None) -> list[str]:
    if not u or u.get("configured") is False:
        return ["uploads:  none configured ([upload] missing): counts are kept locally only"]
    out = []
    if u["paused"]:
        out.append(f"uploads:  PAUSED since {_short(u['last_error_at'])}: {u['last_error']}")
        out.append("          nothing is lost; fix the cause, then run `kiosk sync`")
    else:
        nxt = (f", next attempt {_short(u['next_attempt'])}" if u.get("next_attempt")
               else ", no attempts while the daemon is stopped" if not u.get("daemon_running", True)
               else "")
        out.append(f"uploads:  last success {_short(u['last_success'])}{nxt}"
                   + (f" to {u['url']}" if u.get("url") else ""))
        if u["last_error"]:
            out.append(f"          last error {_short(u['last_error_at'])}: {u['last_error']}")
    out.append(f"          backlog {u['backlog_periods']} period(s)"
               + (f", oldest {_short(u['oldest_unsent'])}" if u["oldest_unsent"] else "")
               + f"; {u['sent_periods']} sent; {u['quarantined_periods']} quarantined"
               + (" (see `kiosk sync --list-quarantined`)" if u["quarantined_periods"] else ""))
    return out
