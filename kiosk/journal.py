"""``kiosk log``: the local event journal, for a person at the site without journalctl.

The daemon's writer, the daemon itself, the uploader and the staff commands (import,
annotate) append to the ``journal`` table; the daemon prunes it after
``[storage] journal_retention_days``.  This module reads it back, filtered and in
local time.  It also holds the small helpers the staff commands share (options,
opening the database, reading times).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from kiosk.config import DEFAULT_PATH, Config, find_config_path, load
from kiosk.exc import ConfigError, ExportError

if TYPE_CHECKING:  # SQLite and sqlite_utils load only when a command runs (fast --help)
    from kiosk.store import Store

DEFAULT_TZ = "Europe/Helsinki"  #: Used when there is no config (``--db`` only), like the other commands.

#: Logging level names in the journal, by severity.
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

#: The kinds written by the kiosk's components (shown in --help; others are accepted too).
KINDS = ("daemon-start", "daemon-stop", "state", "reconnect", "device-reset",
         "implausible-total", "rejected-line", "clock-jump", "config-reload", "upload",
         "quarantine", "import", "annotation")

# -- shared by the staff commands ------------------------------------------------------------

config_option = click.option(
    "--config", "-c", "config_path", metavar="PATH",
    help=f"Config file (default: $KIOSK_CONFIG, else {DEFAULT_PATH}).",
)
db_option = click.option("--db", "db_path", metavar="PATH",
                         help="Database file (default: [storage] path of the config).")

_RELATIVE = re.compile(r"(\d+)\s*(m|min|h|d|w)")
_UNIT_S = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def load_config(config_path: str | None, db_path: str | None) -> Config | None:
    """The config, as ``kiosk status`` finds it; None when only ``--db`` was given and no
    config is found."""
    if db_path is None or config_path is not None or os.environ.get("KIOSK_CONFIG"):
        try:
            return load(find_config_path(config_path))
        except ConfigError:
            if db_path is None:
                raise
    return None


def locate(config_path: str | None, db_path: str | None) -> tuple[str, ZoneInfo, Config | None]:
    """(database path, local time zone, config or None) from the options."""
    cfg = load_config(config_path, db_path)
    path = db_path or cfg.storage.path
    return path, ZoneInfo(cfg.device.timezone if cfg else DEFAULT_TZ), cfg


def open_store(config_path: str | None, db_path: str | None, *, write: bool = False,
               create: bool = True) -> tuple[Store, ZoneInfo, Config | None]:
    """(store, local time zone, config or None).

    ``write``: the writer connection (creates and migrates the database if needed; safe
    beside the running daemon, each write is one short ``BEGIN IMMEDIATE`` transaction).
    Otherwise read-only, never creating anything.  ``create=False``: a missing database
    is an error also for writing.
    """
    from kiosk.store import Store

    path, tz, cfg = locate(config_path, db_path)
    if write and not create and not os.path.exists(path):
        Store.open_reader(path)  # raises the usual "no database yet" error
    if write and not os.path.exists(path):
        click.echo(f"note: {path} did not exist; creating a new database (the service user must "
                   f"be able to write it: run this as that user, e.g. sudo -u kiosk)", err=True)
    store = Store.open(path) if write else Store.open_reader(path)
    return store, tz, cfg


def parse_when(text: str, tz: ZoneInfo, *, now: float) -> float:
    """A user-given time: ``24h``, ``30m``, ``7d``, ``2w`` (that long ago) or anything
    :func:`kiosk.periods.parse_time` reads.  Returns UTC seconds."""
    from kiosk.periods import parse_time

    m = _RELATIVE.fullmatch(text.strip())
    if m:
        return now - int(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return parse_time(text, tz, now=now)
    except ExportError as e:
        if "cannot read the time" in str(e):
            raise ExportError(
                f"cannot read the time {text!r}; use e.g. 24h, 7d, 2026-11-22, 2026-11-22T09:00, "
                f"2026-11-22T07:00:00Z, today or yesterday"
            ) from None
        raise


def local_text(ts: float, tz: ZoneInfo, *, seconds: bool = True) -> str:
    """``2026-11-22 09:02:13 +02:00`` (``seconds=False``: ``2026-11-22 09:02 +02:00``)."""
    dt = datetime.fromtimestamp(ts, tz)
    off = int(dt.utcoffset().total_seconds()) // 60
    sign = "+" if off >= 0 else "-"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{dt.strftime(fmt)} {sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"


def add_journal(conn: Any, level: str, kind: str, message: str, *, now: float,
                sensor_id: str | None = None) -> None:
    """Append one journal line inside the caller's write transaction."""
    conn.execute("INSERT INTO journal (ts, level, kind, sensor_id, message) VALUES (?, ?, ?, ?, ?)",
                 (now, level, kind, sensor_id, message))


# -- reading the journal ---------------------------------------------------------------------

def query(store: Store, *, since: float, until: float | None = None, min_level: str | None = None,
          sensors: Sequence[str] = (), kinds: Sequence[str] = (), limit: int | None = 500
          ) -> tuple[list[dict[str, Any]], int]:
    """Journal entries in [since, until) matching the filters, oldest first.

    At most ``limit`` (the newest ones; None or 0: all).  Returns (entries, how many
    matched in all).  ``min_level`` is a level name: that level and more severe ones.
    """
    where = ["ts >= ?"]
    params: list[Any] = [since]
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    if min_level:
        floor = LEVELS[min_level.upper()]
        names = [n for n, v in LEVELS.items() if v >= floor]
        where.append(f"upper(level) IN ({', '.join('?' * len(names))})")
        params += names
    if sensors:
        where.append(f"sensor_id IN ({', '.join('?' * len(sensors))})")
        params += list(sensors)
    if kinds:
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        params += list(kinds)
    cond = " AND ".join(where)
    total = store.conn.execute(f"SELECT count(*) FROM journal WHERE {cond}", params).fetchone()[0]
    sql = (f"SELECT id, ts, level, kind, sensor_id, message FROM journal WHERE {cond}"
           " ORDER BY ts DESC, id DESC")
    if limit:
        sql += f" LIMIT {int(limit)}"
    cur = store.conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    rows.reverse()
    return rows, int(total)


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


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


@click.command("log", context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@db_option
@click.option("--since", default="24h", show_default=True, metavar="TIME",
              help="From: 24h, 7d, 30m (that long ago), 2026-11-22 (local midnight), "
                   "2026-11-22T09:00 (local), an ISO time with Z or offset, today, yesterday.")
@click.option("--until", default=None, metavar="TIME", help="Up to (exclusive), same forms.")
@click.option("--level", type=click.Choice(["debug", "info", "warning", "error"],
                                           case_sensitive=False),
              default=None, help="Only this level and more severe ones (default: all).")
@click.option("--sensor", "sensors", multiple=True, metavar="ID",
              help="Only entries about this sensor (repeatable).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help=f"Only this kind of entry (repeatable or comma-separated): {', '.join(KINDS)}.")
@click.option("--limit", type=click.IntRange(min=0), default=500, show_default=True,
              help="Show at most the newest N entries (0: all).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def log_command(config_path: str | None, db_path: str | None, since: str, until: str | None,
                level: str | None, sensors: tuple[str, ...], kinds: tuple[str, ...], limit: int,
                fmt: str) -> None:
    """The local event journal: daemon starts and stops, sensor faults and recoveries,
    rejected serial lines, clock jumps, uploads, quarantines, config reloads, imports
    and annotations.

    Lines are in local time (device.timezone), newest last.  Reads the database only;
    safe while the daemon runs.  The daemon keeps [storage] journal_retention_days.
    """
    store, tz, cfg = open_store(config_path, db_path)
    now = time.time()
    with store:
        t0 = parse_when(since, tz, now=now)
        t1 = parse_when(until, tz, now=now) if until else None
        if t1 is not None and t1 <= t0:
            raise click.BadParameter(f"--until ({until}) must be after --since ({since})")
        rows, total = query(store, since=t0, until=t1, min_level=level, sensors=_split(sensors),
                            kinds=_split(kinds), limit=limit)
    if fmt == "json":
        click.echo(json.dumps(as_json(rows, tz), indent=1, ensure_ascii=False))
    elif not rows:
        filters = [f"--{name} {','.join(v) if isinstance(v, tuple) else v}"
                   for name, v in (("level", level), ("sensor", sensors), ("kind", kinds)) if v]
        what = f" matching {' '.join(filters)}" if filters else ""
        span = f" until {local_text(t1, tz)}" if t1 is not None else ""
        click.echo(f"no journal entries{what} since {local_text(t0, tz)}{span}")
    else:
        click.echo(format_text(rows, tz))
    if total > len(rows):
        click.echo(f"(showing the newest {len(rows)} of {total} entries; use --limit 0 or a later "
                   f"--since for the rest)", err=True)
    if cfg is not None and t0 < now - cfg.storage.journal_retention_days * 86400:
        click.echo(f"(the journal keeps {cfg.storage.journal_retention_days} days; older entries "
                   f"are removed)", err=True)
