"""``kiosk log``: the local event journal, for a person at the site without journalctl.

The daemon's writer, the daemon itself, the uploader and the staff commands (import,
annotate) append to the ``journal`` table; the daemon prunes it after
``[storage] journal_retention_days``.  This module reads it back, filtered and in
local time.  It also holds the small helpers the staff commands share (options,
opening the database, reading times).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # SQLite and sqlite_utils load only when a command runs (fast --help)
    from kiosk.store import Store

#: Logging level names in the journal, by severity.
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

#: The kinds written by the kiosk's components (shown in --help; others are accepted too).
KINDS = ("daemon-start", "daemon-stop", "state", "reconnect", "rejected-line",
         # a serial counter's running totals (kiosk.sensors.serial.JOURNAL_KINDS)
         "total-baseline", "counter-wrap", "garbled-total", "device-reset", "counted-offline",
         "reset-while-offline", "implausible-total",
         "clock", "clock-jump", "config-reload", "upload", "quarantine", "import", "annotation",
         "storage", "counts-lost")

# -- shared by the staff commands ------------------------------------------------------------

def parse_when(text: str, tz: ZoneInfo, *, now: float) -> float:
    """A user-given time (UTC seconds): the one parser, :func:`kiosk.periods.parse_time`."""
    from kiosk.periods import parse_time

    return parse_time(text, tz, now=now)


def local_text(ts: float, tz: ZoneInfo, *, seconds: bool = True) -> str:
    """``2026-11-22 09:02:13 +02:00`` (``seconds=False``: ``2026-11-22 09:02 +02:00``)."""
    from kiosk.periods import utc_offset_s

    dt = datetime.fromtimestamp(ts, tz)
    off = utc_offset_s(ts, tz) // 60
    sign = "+" if off >= 0 else "-"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{dt.strftime(fmt)} {sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"


def add_journal(conn: Any, level: str, kind: str, message: str, *, now: float,
                sensor_id: str | None = None) -> None:
    """Append one journal line inside the caller's write transaction (``now``: UTC s)."""
    from kiosk.store.journal import JournalEntry, insert_journal

    insert_journal(conn, [JournalEntry(now, level, kind, message, sensor_id)])


# -- reading the journal ---------------------------------------------------------------------

def query(store: Store, *, since: float, until: float | None = None, min_level: str | None = None,
          sensors: Sequence[str] = (), kinds: Sequence[str] = (), limit: int | None = 500
          ) -> tuple[list[dict[str, Any]], int]:
    """Journal entries in [since, until) matching the filters, oldest first.

    At most ``limit`` (the newest ones; None or 0: all).  Returns (entries, how many
    matched in all).  ``min_level`` is a level name: that level and more severe ones.
    """
    levels: list[str] = []
    if min_level:
        floor = LEVELS[min_level.upper()]
        levels = [n for n, v in LEVELS.items() if v >= floor]
    return store.query_journal(since=since, until=until, levels=levels, sensors=sensors,
                               kinds=kinds, limit=limit)


def format_text(entries: Sequence[dict[str, Any]], tz: ZoneInfo) -> str:
    """One line per entry: local time, level, sensor (``-`` for the whole kiosk), message.

    Continuation lines of a multi-line message are indented under the message.
    """
    width = max([len(e["sensor_id"] or "-") for e in entries] + [1])
    lines = []
    for e in entries:
        head = f"{local_text(e['ts'], tz)}  {e['level'].upper():<8} {(e['sensor_id'] or '-'):<{width}}  "
        msg_lines = str(e["message"]).splitlines() or [""]
        lines.append(head + msg_lines[0])
        lines += [" " * len(head) + m for m in msg_lines[1:]]
    return "\n".join(lines)


def as_json(entries: Sequence[dict[str, Any]], tz: ZoneInfo) -> list[dict[str, Any]]:
    from kiosk.periods import iso_utc

    return [{"id": e["id"], "time": iso_utc(e["ts"]),
             "local_time": datetime.fromtimestamp(e["ts"], tz).isoformat(timespec="seconds"),
             "level": e["level"].upper(), "kind": e["kind"], "sensor_id": e["sensor_id"],
             "message": e["message"]} for e in entries]
