"""What uploads say to people: durations, local times, and ``kiosk sync``'s summary."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``10 h 3 min`` or ``3 d 4 h``."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def local_text(ts: float, tz: ZoneInfo) -> str:
    """``2026-12-03 09:00``: a UTC second as local wall time in ``tz``."""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M")


def sync_summary(up: Any, outcome: Any) -> tuple[list[str], bool]:
    """What ``kiosk sync`` says after ``up.cycle()`` (an :class:`~kiosk.upload.Uploader` and
    the :class:`~kiosk.upload.Outcome` it returned): what it sent and what is left, in
    local time.  Returns the lines and whether everything pending went out."""
    b = up.store.backlog()
    tz = up.config.device.timezone
    lines = []
    if outcome is not None:
        lines.append(f"upload stopped: {outcome.message}")
    sent = f"sent {up.sent_periods:,} period(s)" if up.sent_periods else "sent nothing"
    if up.sent_span is not None:
        sent += (f" from {local_text(up.sent_span[0], up.tz)} to "
                 f"{local_text(up.sent_span[1], up.tz)} ({tz})")
    quarantined = f"{b.quarantined} quarantined"
    if b.pending == 0:
        lines.append(f"{sent}; nothing left to send ({quarantined})")
        return lines, outcome is None
    oldest = f", the oldest from {local_text(b.oldest, up.tz)} ({tz})" if b.oldest else ""
    again = ("run `kiosk sync` again" if outcome is None
             else "run `kiosk sync` again when the cause is fixed")
    lines.append(f"{sent}; {b.pending:,} period(s) left to send{oldest}; {quarantined}: {again}")
    return lines, False
