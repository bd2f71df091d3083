"""``kiosk status``: what the counter is doing, read from the database alone."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kiosk.config import Config
from kiosk.periods import iso_local, local_midnight
from kiosk.store import Store, pid_alive
from kiosk.store.health import read_health

STALL_HEARTBEATS = 3  #: Heartbeats missed (plus 10 s) before a live daemon counts as stalled.


def collect(store: Store, *, tz: ZoneInfo, config: Config | None, now: float) -> dict[str, Any]:
    """Everything ``kiosk status`` shows, as a JSON-able dict (times as local ISO strings)."""
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
    if daemon.get("speed", 1) != 1 and last_seen:
        # an accelerated demo: "today" is the simulated day
        today = local_midnight(datetime.fromtimestamp(last_seen, tz).date(), tz)
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
    return {
        "device": ({"id": config.device.id, "site": config.device.site,
                    "timezone": config.device.timezone} if config else None),
        "daemon": {
            "state": state,
            "pid": daemon.get("pid"),
            "version": daemon.get("version"),
            "started_at": _local(daemon.get("started_at"), tz),
            "last_write": _local(last_seen, tz),
            "last_write_age_s": round(now - last_seen, 1) if last_seen else None,
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
        "upload": _upload_info(store, tz, config),
    }


def writes_failing(db_path: str, pid: int | None) -> dict[str, Any] | None:
    """The running daemon's "writes are failing" record from the health file, or None.

    The daemon puts it there (not in the database, which it cannot write) and clears it when
    a write succeeds again; a record left by another process is ignored.
    """
    record = read_health(db_path).get("writes_failing")
    if not isinstance(record, dict) or (pid is not None and record.get("pid") != pid):
        return None
    return record


def _clock_info(store: Store, running: bool) -> dict[str, Any]:
    """The daemon's view of the wall clock, and the pulses waiting for it to be set."""
    clock = store.meta("clock") or {}
    waiting = (0, 0) if "m006_unplaced_pulses" in store.pending_migrations \
        else store.unplaced_summary()
    return {"setting": clock.get("setting", "ntp"),
            "set": clock.get("trusted", True) if running else None,
            "waiting_pulses": waiting[0] + int(clock.get("unplaced_in_memory", 0) if running else 0),
            "waiting_visitors": waiting[1]}


def _upload_info(store: Store, tz: ZoneInfo, config: Config | None) -> dict[str, Any] | None:
    """Last success, next attempt, backlog, last error and pause state of uploads."""
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
        "next_attempt": _local(state.get("next_attempt_at"), tz),
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


def render(info: dict[str, Any]) -> str:
    """The human-readable form of :func:`collect`'s result."""
    from tabulate import tabulate

    lines = []
    dev = info["device"]
    if dev:
        lines.append(f"kiosk {dev['id']} at {dev['site']} ({dev['timezone']})")
    d = info["daemon"]
    if d["state"] == "running":
        speed = f", clock x{d['speed']:g}" if d["speed"] != 1 else ""
        lines.append(f"daemon:   running (pid {d['pid']}, version {d['version']}, since "
                     f"{_short(d['started_at'])}, last heartbeat {d['last_write_age_s']} s ago{speed})")
    elif d["state"] == "writes failing":
        f = d["writes_failing"]
        lines.append(f"daemon:   running (pid {d['pid']}), but WRITES FAIL since {_short(f['since'])} "
                     f"({f['for_s']:.0f} s): {f['error']}")
        lines.append(f"          {f['held_in']} in, {f['held_out']} out held in memory (as of "
                     f"{_short(f['updated'])}); they are written when there is room, lost if the "
                     f"daemon stops first")
    elif d["state"] == "stalled":
        lines.append(f"daemon:   STALLED: pid {d['pid']} alive but no heartbeat for "
                     f"{d['last_write_age_s']} s; check `journalctl -u kiosk`")
    else:
        lines.append(f"daemon:   {d['state']}" + (f" (last write {_short(d['last_write'])}, "
                                                  f"stopped by {d['stop_reason'] or 'a crash or power cut'})"
                                                  if d["last_write"] else ""))
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
    lines.extend(_render_upload(info.get("upload")))
    lines.append("")
    table = [[s["sensor_id"], s["kind"] or "-", s["state"], _short(s["last_pulse"]),
              s["today_in"], s["today_out"], s["rejected_lines"], s["message"] or ""]
             for s in info["sensors"]]
    lines.append(tabulate(table, headers=["sensor", "kind", "state", "last pulse", "in today",
                                          "out today", "rejected", "last message"]))
    return "\n".join(lines)


def _render_upload(u: dict[str, Any] | None) -> list[str]:
    if not u or u.get("configured") is False:
        return ["uploads:  none configured ([upload] missing): counts are kept locally only"]
    out = []
    if u["paused"]:
        out.append(f"uploads:  PAUSED since {_short(u['last_error_at'])}: {u['last_error']}")
        out.append("          nothing is lost; fix the cause, then run `kiosk sync`")
    else:
        out.append(f"uploads:  last success {_short(u['last_success'])}, next attempt "
                   f"{_short(u['next_attempt'])}" + (f" to {u['url']}" if u.get("url") else ""))
        if u["last_error"]:
            out.append(f"          last error {_short(u['last_error_at'])}: {u['last_error']}")
    out.append(f"          backlog {u['backlog_periods']} period(s)"
               + (f", oldest {_short(u['oldest_unsent'])}" if u["oldest_unsent"] else "")
               + f"; {u['sent_periods']} sent; {u['quarantined_periods']} quarantined"
               + (" (see `kiosk sync --list-quarantined`)" if u["quarantined_periods"] else ""))
    return out
