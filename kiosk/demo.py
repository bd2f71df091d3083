"""``kiosk demo``: the whole chain on one machine with an accelerated clock.

Simulated entrances -> daemon -> local SQLite -> uploader -> reference receiver on
127.0.0.1, each accepted period printed as it arrives.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from dataclasses import replace
from datetime import datetime, time
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from kiosk.clock import ScaledClock
from kiosk.config import UploadConfig, load_embedded_demo
from kiosk.periods import parse_time

PROGRESS_EVERY_S = 2.0  #: Real seconds between progress lines.


class DemoPrinter:
    """Prints accepted periods and progress lines, one at a time."""

    def __init__(self, tz: ZoneInfo, out: TextIO) -> None:
        self.tz = tz
        self.out = out
        self.lock = threading.Lock()
        #: (sensor_id, start) -> "in" of the latest revision the receiver holds
        self.held: dict[tuple[str, str], int] = {}

    @property
    def accepted_periods(self) -> int:
        """Periods the receiver holds (a revision replaces its period, it is not added)."""
        return len(self.held)

    @property
    def accepted_in(self) -> int:
        """Visitors in over the periods the receiver holds (latest revisions)."""
        return sum(self.held.values())

    def print(self, text: str) -> None:
        with self.lock:
            print(text, file=self.out, flush=True)

    def accepted(self, total: dict[str, Any]) -> None:
        start = datetime.fromisoformat(total["local_start"])
        end = datetime.fromisoformat(total["end"].replace("Z", "+00:00")).astimezone(self.tz)
        key = (total["sensor_id"], total["start"])
        before = self.held.get(key)
        self.held[key] = total["in"]
        if before is not None:
            self.print(f"  revised   {total['sensor_id']:<14} {start:%a %d.%m %H:%M}-{end:%H:%M} "
                       f"in {before} -> {total['in']} (revision {total['revision']}): counts "
                       f"written after the period was sent replace it, not add to it")
            return
        self.print(f"  accepted  {total['sensor_id']:<14} {start:%a %d.%m %H:%M}-{end:%H:%M} "
                   f"{start:%z}  in {total['in']:>4}  out {total['out']:>4}  coverage "
                   f"{total['coverage']:.2f}  revision {total['revision']}")


class _Progress:
    """A demo service: a progress line every few seconds; stops the daemon after --hours."""

    def __init__(self, daemon: Any, printer: DemoPrinter, stop_at: float | None) -> None:
        self.daemon = daemon
        self.printer = printer
        self.stop_at = stop_at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        from kiosk.store import Store

        clock, tz = self.daemon.clock, self.printer.tz
        store = Store.open_reader(self.daemon.config.storage.path)
        try:
            while not self._stop.wait(PROGRESS_EVERY_S):
                now = clock.now()
                day = parse_time(datetime.fromtimestamp(now, tz).date().isoformat(), tz, now=now)
                counted = store.totals_between(day, now + 1)
                i = sum(v[0] for v in counted.values())
                o = sum(v[1] for v in counted.values())
                backlog = store.backlog().pending
                self.printer.print(
                    f"[{datetime.fromtimestamp(now, tz):%a %d.%m %H:%M %Z}] counted today "
                    f"{i} in / {o} out; {feedback_text(store, day, now + 1)}; receiver has "
                    f"{self.printer.accepted_periods} periods ({self.printer.accepted_in} in); "
                    f"backlog {backlog}")
                if self.stop_at is not None and now >= self.stop_at:
                    self.daemon.request_stop()
                    return
        finally:
            store.close()


def feedback_text(store: Any, since: float, until: float) -> str:
    """``feedback 12 answers, mean score 71.4`` for the answers in [since, until) (UTC s)."""
    from kiosk.feedback import score

    rows = store.feedback_rows(since, until)
    n = sum(r.answers for r in rows)
    if not n:
        return "feedback 0 answers"
    mean = sum(r.answers * score(r.rank, r.scale) for r in rows) / n
    return f"feedback {n} answers, mean score {mean:.1f}"


def run_demo(*, data_dir: str, speed: float, hours: float | None, start_at: str | None,
             debug: bool = False, out: TextIO | None = None) -> int:
    """Run the demo until Ctrl-C or ``hours`` simulated hours; returns the exit status."""
    from kiosk.app import run_daemon
    from kiosk.receiver import Receiver

    out = out or sys.stdout
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("counts.db", "receiver.db"):
        for suffix in ("", "-wal", "-shm", ".upload.lock", ".reserve", ".health"):
            (d / (name + suffix)).unlink(missing_ok=True)
    token = secrets.token_hex(16)
    token_file = d / "token"
    token_file.unlink(missing_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, token.encode())
    os.close(fd)

    cfg = load_embedded_demo(str(d / "counts.db"))
    tz = ZoneInfo(cfg.device.timezone)
    real_now = datetime.now(tz)
    start = (parse_time(start_at, tz, now=real_now.timestamp()) if start_at else
             datetime.combine(real_now.date(), time(7), tz).timestamp())
    clock = ScaledClock(start=start, speed=speed)
    printer = DemoPrinter(tz, out)
    receiver = Receiver(str(d / "receiver.db"), token=token, on_accept=printer.accepted)
    receiver.start()
    cfg = replace(cfg, upload=UploadConfig(url=receiver.url, token_file=str(token_file),
                                           period_minutes=60, jitter_s=120, grace_s=5))
    stop_at = start + hours * 3600 if hours else None
    printer.print(f"kiosk demo: 2 simulated entrances and a feedback terminal, clock "
                  f"x{speed:g} from "
                  f"{datetime.fromtimestamp(start, tz):%a %d.%m.%Y %H:%M %Z}, "
                  f"database {d / 'counts.db'}")
    printer.print(f"reference receiver on {receiver.url}; Ctrl-C stops")
    try:
        status = run_daemon(cfg, speed=speed, clock=clock, debug=debug, quiet=not debug,
                            extra_services=[lambda daemon: _Progress(daemon, printer, stop_at)])
    finally:
        receiver.stop()
    kiosk = program_name()
    db = d / "counts.db"
    printer.print(
        f"done: the receiver holds {printer.accepted_periods} periods ({printer.accepted_in} in).\n"
        f"look around:  {kiosk} status --db {db}\n"
        f"              {kiosk} report day --db {db}\n"
        f"              {kiosk} export --db {db} --since 7d\n"
        f"              {kiosk} receiver --show --db {d / 'receiver.db'}")
    return status


def program_name() -> str:
    """How to run this very ``kiosk`` from the current directory, as a person would type it:
    ``kiosk`` when that is on PATH, else its path (``.venv/bin/kiosk``), else
    ``python3 -m kiosk``."""
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "kiosk" and os.path.exists(argv0):
        on_path = shutil.which("kiosk")
        if on_path and os.path.samefile(on_path, argv0):
            return "kiosk"
        rel = os.path.relpath(argv0)
        return rel if rel.startswith((".", "/")) or os.sep in rel else f"./{rel}"
    exe = sys.executable or "python3"
    on_path = shutil.which(os.path.basename(exe))
    if on_path and os.path.exists(exe) and os.path.samefile(on_path, exe):
        return f"{os.path.basename(exe)} -m kiosk"
    rel = os.path.relpath(exe)
    return f"{rel if not rel.startswith('..') else exe} -m kiosk"
