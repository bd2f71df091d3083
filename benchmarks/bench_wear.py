#!/usr/bin/env python3
"""SD-card wear: what a simulated 6,000-visit day writes at the block device, and how many commits.

Run from the project root, as root for the block-device figure (under 10 s a day on a
2-core x86 machine)::

    .venv/bin/python benchmarks/bench_wear.py [--seeds 1 2 3] [--json] [--no-loop]

The day: a Monday (2026-03-02, Europe/Helsinki, weeks from a DST change), opening hours
08:00-20:00, two entrances ("north" and "south") with 3,000 visits each: the project's
simulated traffic model (:class:`~kiosk.sensors.simulated.SimulatedSensor`: a lunch and an
afternoon peak, gamma-distributed stays), one ``in`` pulse per arrival and one ``out`` per
departure, 12,000 pulses in all.  The real :class:`~kiosk.daemon.Daemon` (its loop, its
:class:`~kiosk.writer.Writer` and :class:`~kiosk.store.Store`) runs it at **default
settings** from local midnight to the next, then stops as on SIGTERM.

Time: a :class:`~kiosk.clock.ManualClock` (speed 1, so every interval of the loop is the
real one) that the loop itself moves.  Whenever the loop is about to block for ``w`` clock
seconds, the clock jumps to the end of that wait, or to the next pulse if that comes first,
and puts the pulses that are due on the daemon's queue at their own timestamps.  So every
commit happens at the clock time it would in the field (a discrete-event simulation), and
a day takes seconds instead of 24 hours.

What is measured:

* **commits**: every write transaction of the daemon that changed something
  (:meth:`Store.write` is wrapped to count them), split into those that carry counts and
  those that carry none (heartbeats, raw events or housekeeping only);
* **bytes at the block device**: the database lives on a fresh ext4 file system (4 KiB
  blocks, ``mkfs.ext4`` defaults, mounted ``noatime`` as Raspberry Pi OS mounts its root;
  ``--mount-options`` to change) in an image on a loop device; the figure is the sectors
  the loop device wrote (``/sys/block/loopN/stat``) from before the daemon starts to after
  it stopped (its last checkpoint) and a ``syncfs``.  It includes ext4's own journal.  The
  kernel's timers run on real time, so a day run in seconds would see few of them:
  :class:`KernelTimers` runs them at simulated time (``--no-kernel-timers`` to leave them
  alone), and the sectors they write are shown apart: ext4's 5-s journal commit (the WAL's
  new timestamps) and the write-back of the ``-shm`` file, which SQLite maps but never syncs;
* ``write_bytes`` and ``wchar`` of this process (``/proc/self/io``): write_bytes counts the
  pages the daemon dirtied, without the file system's journal.  Without a loop device
  (``--no-loop``) the database goes to the temp dir and this is the only byte figure; it is
  the measure of the 165 MB in issue 8.

Without root, loop devices or ``mkfs.ext4`` the benchmark says so and falls back to
``--no-loop``.  Medians over the seeds are printed, with min and max.  To measure another
version of the package (the "before" figures in the README), run this file with
``PYTHONPATH`` pointing at that version's source tree, e.g.
``git archive 5b81c68 | tar -x -C /tmp/before`` then ``PYTHONPATH=/tmp/before``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kiosk import daemon as daemon_module
from kiosk.clock import ManualClock
from kiosk.config import loads as config_from_text
from kiosk.daemon import Daemon
from kiosk.events import Message, Pulse
from kiosk.sensors.simulated import SimulatedSensor
from kiosk.store import Store

TZ = "Europe/Helsinki"
MONDAY = date(2026, 3, 2)
ENTRANCES = ("north", "south")
VISITS = 6000  # over both entrances
JOURNAL_COMMIT_S = 5.0  # ext4's default commit interval (real seconds)
IMAGE_MB = 2048  # sparse; above 512 MB mke2fs makes a "default" file system anyway

CONFIG = """\
[device]
id = "bench-kiosk-01"
site = "bench-site"
timezone = "{tz}"

[storage]
path = "{db}"
"""
# The pulses are put on the queue by the clock; the configured sensors only give the
# entrances their ids: GPIO beams on gpiozero's mock pins, which stay quiet and run no
# thread that could fall behind a clock moving this fast.
IDLE_SENSOR = """
[[sensors]]
id = "{id}"
type = "gpio"
pin = {pin}
"""


def say(text: str = "") -> None:
    print(text, flush=True)


# -- the day's traffic ---------------------------------------------------------------------------


def day_bounds() -> tuple[float, float]:
    tz = ZoneInfo(TZ)
    start = datetime.combine(MONDAY, datetime.min.time(), tzinfo=tz).timestamp()
    end = datetime.combine(MONDAY + timedelta(days=1), datetime.min.time(), tzinfo=tz).timestamp()
    return start, end


def day_pulses(seed: int) -> list[Pulse]:
    """Every pulse of the day at both entrances, in time order."""
    start, end = day_bounds()
    out: list[Message] = []
    for i, sid in enumerate(ENTRANCES):
        sim = SimulatedSensor(sid, emit=out.append, clock=ManualClock(start), timezone=TZ,
                              weekday_visits=VISITS / len(ENTRANCES), seed=seed * 100 + i)
        sim.advance_to(end)
    pulses = [m for m in out if isinstance(m, Pulse)]
    pulses.sort(key=lambda p: p.ts)
    return pulses


# -- the clock the loop moves ----------------------------------------------------------------------


class DayClock(ManualClock):
    """A :class:`ManualClock` the daemon loop moves itself (see the module docstring).

    :param start: UTC s where the day starts; ``end``: where it ends (the daemon is asked
        to stop there); ``pulses``: fed to :attr:`daemon`'s queue at their timestamps;
        ``tick``: called with the new time after every jump (the 5-s journal commits).
    """

    def __init__(self, start: float, end: float, pulses: list[Pulse], tick: Any = None) -> None:
        super().__init__(start)
        self.end = end
        self.pulses = pulses
        self.next = 0
        self.daemon: Daemon | None = None
        self.tick = tick
        self.stopping = False

    def real_timeout(self, seconds: float) -> float:
        d = self.daemon
        if d is None or self.stopping:
            return super().real_timeout(seconds)
        now = self.now()
        target = now + max(0.0, seconds)
        if self.next < len(self.pulses):
            target = min(target, self.pulses[self.next].ts)
        target = min(target, self.end)
        if target > now:
            self.advance(target - now)
            if self.tick is not None:
                self.tick(target)
        while self.next < len(self.pulses) and self.pulses[self.next].ts <= target:
            d.queue.put(self.pulses[self.next])
            self.next += 1
        if target >= self.end:
            self.stopping = True
            d.request_stop()
        else:  # the loop need not sit out its 1 ms minimum wait: 172,800 ticks a day
            if hasattr(d, "wake"):
                d.wake()
            else:  # a version from before Daemon.wake (the README's "before" figures)
                d.queue.put(daemon_module._WAKE)
        return 0.0


# -- counting commits --------------------------------------------------------------------------------


@dataclass
class Commits:
    total: int = 0
    with_counts: int = 0  #: write_batch calls that carried counts
    batches: int = 0  #: write_batch calls

    @property
    def without_counts(self) -> int:
        return self.total - self.with_counts


@contextmanager
def counting_commits(hook: Any = None, clock: Any = None) -> Iterator[Commits]:
    """Count the transactions of :meth:`Store.write` that changed a row (one that changed
    nothing, such as an hourly sweep with nothing to delete, writes nothing) and what each
    ``write_batch`` carried; ``hook(clock.now())`` is called after each."""
    c = Commits()
    write, batch = Store.write, Store.write_batch

    @contextmanager
    def counted_write(self: Store) -> Iterator[Any]:
        before = self.conn.total_changes
        with write(self) as conn:
            yield conn
        if self.conn.total_changes > before:  # it committed, and wrote something
            c.total += 1
            if hook is not None:
                hook(clock.now())

    def counted_batch(self: Store, **kw: Any) -> Any:
        before = c.total
        result = batch(self, **kw)
        if c.total > before:
            c.batches += 1
            c.with_counts += bool(kw.get("counts"))
        return result

    Store.write = counted_write  # type: ignore[method-assign]
    Store.write_batch = counted_batch  # type: ignore[method-assign,assignment]
    try:
        yield c
    finally:
        Store.write = write  # type: ignore[method-assign]
        Store.write_batch = batch  # type: ignore[method-assign]


# -- the block device --------------------------------------------------------------------------------


class LoopFs:
    """A fresh ext4 file system in an image on a loop device, mounted at ``mount``."""

    def __init__(self, base: Path, options: str) -> None:
        self.base = base
        self.options = options
        self.image = base / "sd.img"
        self.mount = base / "mnt"
        self.device = ""
        self._fd = -1

    def __enter__(self) -> LoopFs:
        self.mount.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(IMAGE_MB * 1024 * 1024)
        # lazy init off: no background zeroing of inode tables during the measurement
        run("mkfs.ext4", "-q", "-F", "-T", "default", "-b", "4096", "-E",
            "lazy_itable_init=0,lazy_journal_init=0", str(self.image))
        self.device = run("losetup", "--find", "--show", str(self.image)).strip()
        try:
            run("mount", "-o", self.options, self.device, str(self.mount))
        except Exception:
            run("losetup", "-d", self.device)
            raise
        self._fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        run("umount", str(self.mount))
        run("losetup", "-d", self.device)

    def sectors_written(self) -> int:
        """Sectors (512 B) the loop device has written since it was set up."""
        name = os.path.basename(self.device)
        with open(f"/sys/block/{name}/stat") as f:
            return int(f.read().split()[6])

    def syncfs(self) -> None:
        """Write back and commit ext4's journal, as its 5-s timer does."""
        if _LIBC.syncfs(self._fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")


_LIBC = ctypes.CDLL(None, use_errno=True)


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def loop_available() -> str | None:
    """None if a loop-mounted ext4 can be used here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("mkfs.ext4", "losetup", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control"
    return None


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


# -- one day -------------------------------------------------------------------------------------


class KernelTimers:
    """ext4's and the page cache's timers, run at simulated time on the loop file system.

    In the field ext4 commits its journal 5 s after a transaction opened (``commit=5``): the
    WAL's changed timestamps land there; and the flusher, waking every 5 s, writes back data
    that has been dirty for 30 s (``dirty_expire_centisecs``): that is how the ``-shm`` file,
    which SQLite maps but never syncs, reaches the disk.  A day run in seconds would see a
    small fraction of those, so they are called here at simulated time: 5 s after the first
    commit since the last journal commit, an ``fsync`` of the WAL commits the running
    transaction that holds its new timestamps, as the timer would (mounted ``lazytime``,
    timestamps are not journalled and this is skipped); on each 5-s tick, a ``-shm`` dirty
    for 30 s or more is written back with ``fdatasync``.  The sectors each writes are kept
    apart for the breakdown.
    """

    JOURNAL_S = 5.0
    FLUSHER_S = 5.0
    EXPIRE_S = 30.0

    def __init__(self, fs: LoopFs, db: Path) -> None:
        self.fs = fs
        self.shm = Path(str(db) + "-shm")
        self.wal = Path(str(db) + "-wal")
        self.lazytime = "lazytime" in fs.options.split(",")
        self.flusher_slot = -1.0
        self.journal_due: float | None = None
        self.dirty_since: float | None = None
        self.journal_sectors = 0
        self.writeback_sectors = 0

    def committed(self, t: float) -> None:
        """The daemon committed at ``t``: a journal transaction is open, the ``-shm`` dirty."""
        if self.journal_due is None:
            self.journal_due = t + self.JOURNAL_S
        if self.dirty_since is None:
            self.dirty_since = t

    def __call__(self, t: float) -> None:
        slot = t // self.FLUSHER_S
        if slot != self.flusher_slot:
            self.flusher_slot = slot
            if self.dirty_since is not None and t - self.dirty_since >= self.EXPIRE_S:
                self.dirty_since = None
                s0 = self.fs.sectors_written()
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(self.shm, os.O_RDONLY)
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
                self.writeback_sectors += self.fs.sectors_written() - s0
        if self.journal_due is not None and t >= self.journal_due:
            self.journal_due = None
            if self.lazytime:  # timestamps stay in memory: the timer finds nothing to commit
                return
            s0 = self.fs.sectors_written()
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self.wal, os.O_RDONLY)
                try:
                    os.fsync(fd)  # commits the transaction holding the WAL's timestamps
                finally:
                    os.close(fd)
            self.journal_sectors += self.fs.sectors_written() - s0


def simulate_day(seed: int, base: Path, fs: LoopFs | None, *, timers: bool = True,
                 flush: float | None = None) -> dict[str, Any]:
    start, end = day_bounds()
    pulses = day_pulses(seed)
    db = (fs.mount if fs else base) / f"day{seed}" / "counts.db"
    db.parent.mkdir()
    Store.open(db).close()  # created and migrated before the measurement
    text = CONFIG.format(tz=TZ, db=db)
    if flush is not None:
        text += f"flush_interval_s = {flush}\n"
    config = config_from_text(text + "".join(IDLE_SENSOR.format(id=s, pin=17 + i)
                                             for i, s in enumerate(ENTRANCES)))
    kernel = KernelTimers(fs, db) if fs is not None and timers else None
    clock = DayClock(start, end, pulses, kernel)
    from gpiozero.pins.mock import MockFactory

    daemon = Daemon(config, clock=clock, pin_factory=MockFactory())
    clock.daemon = daemon
    if fs is not None:
        fs.syncfs()
    sectors0 = fs.sectors_written() if fs else 0
    io0 = io_counters()
    t0 = time.monotonic()
    with counting_commits(kernel.committed if kernel else None, clock) as commits:
        rc = daemon.run()
    elapsed = time.monotonic() - t0
    if fs is not None:
        fs.syncfs()
    io1 = io_counters()
    sectors1 = fs.sectors_written() if fs else 0
    if rc != 0:
        raise RuntimeError(f"the daemon exited {rc}")
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT coalesce(sum(in_count), 0), coalesce(sum(out_count), 0)"
                          " FROM counts").fetchone()
    events = conn.execute("SELECT coalesce(sum(count), 0) FROM events").fetchone()[0]
    size = db.stat().st_size
    conn.close()
    sent = (sum(p.direction == "in" for p in pulses), sum(p.direction == "out" for p in pulses))
    if tuple(stored) != sent or events != len(pulses):
        raise RuntimeError(f"seed {seed}: {sent} pulses sent, {tuple(stored)} counted, "
                           f"{events} raw events stored")
    block = (sectors1 - sectors0) * 512 if fs else None
    journal = kernel.journal_sectors * 512 if kernel else 0
    writeback = kernel.writeback_sectors * 512 if kernel else 0
    return {
        "seed": seed, "visits": sent[0], "pulses": len(pulses),
        "commits": commits.total, "commits_with_counts": commits.with_counts,
        "commits_without_counts": commits.without_counts,
        "block_bytes": block,
        "block_sqlite": block - journal - writeback if block is not None else None,
        "block_journal_timer": journal if kernel else None,
        "block_shm_writeback": writeback if kernel else None,
        "write_bytes": io1["write_bytes"] - io0["write_bytes"],
        "wchar": io1["wchar"] - io0["wchar"],
        "db_bytes": size, "elapsed_s": elapsed,
    }


@dataclass
class Row:
    key: str
    label: str
    unit: str
    scale: float
    decimals: int


ROWS = [
    Row("block_bytes", "written at the block device (ext4 on loop, journal included)", "MB", 1e6, 1),
    Row("block_sqlite", "  of which SQLite's syncs (WAL, checkpoints, their journal commits)",
        "MB", 1e6, 1),
    Row("block_journal_timer", "  of which ext4's 5-s journal commits (timestamps)", "MB", 1e6, 1),
    Row("block_shm_writeback", "  of which the write-back of the -shm file", "MB", 1e6, 1),
    Row("write_bytes", "write_bytes of the process (pages dirtied, no fs journal)", "MB", 1e6, 1),
    Row("wchar", "wchar of the process (bytes handed to write())", "MB", 1e6, 1),
    Row("commits", "commits", "", 1, 0),
    Row("commits_with_counts", "commits carrying counts", "", 1, 0),
    Row("commits_without_counts", "commits carrying no counts (heartbeat, events, housekeeping)",
        "", 1, 0),
    Row("db_bytes", "database file after the day (checkpointed)", "kB", 1e3, 0),
    Row("elapsed_s", "time the simulated day took", "s", 1, 0),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--no-loop", action="store_true",
                    help="no loop device: report write_bytes only")
    ap.add_argument("--no-kernel-timers", action="store_true",
                    help="do not run ext4's journal timer and the flusher at simulated time "
                         "(then only SQLite's own syncs and the final syncfs are measured)")
    ap.add_argument("--flush-interval", type=float, default=None, metavar="S",
                    help="[storage] flush_interval_s (default: the default setting)")
    ap.add_argument("--mount-options", default="noatime",
                    help="ext4 mount options (default: noatime, as Raspberry Pi OS mounts /)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the image goes (default: /dev/shm if it exists, else the temp "
                         "dir) or, without a loop device, the databases (default: the temp dir)")
    args = ap.parse_args()
    why = "--no-loop given" if args.no_loop else loop_available()
    parent = args.dir
    if parent is None and why is None and Path("/dev/shm").is_dir():
        parent = Path("/dev/shm")  # only the image: the loop device's figures do not change

    import kiosk

    say(f"SD-card wear of a simulated {VISITS:,}-visit day ({MONDAY}, {TZ}, "
        f"{len(ENTRANCES)} entrances), default settings; kiosk from {Path(kiosk.__file__).parent}")
    say("block device: " + (f"ext4 on a loop device, mounted {args.mount_options}, kernel timers "
                            + ("off" if args.no_kernel_timers else "at simulated time")
                            if why is None else f"not measured ({why}); write_bytes only"))
    if args.flush_interval is not None:
        say(f"flush_interval_s = {args.flush_interval:g} (not the default)")
    results = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="kiosk-wear-", dir=parent) as tmp:
            base = Path(tmp)
            with LoopFs(base, args.mount_options) if why is None else contextlib.nullcontext() as fs:
                r = simulate_day(seed, base, fs, timers=not args.no_kernel_timers,
                                 flush=args.flush_interval)
        results.append(r)
        blk = f"{r['block_bytes'] / 1e6:.1f} MB at the block device, " if r["block_bytes"] else ""
        say(f"  seed {seed}: {r['visits']:,} visits, {r['pulses']:,} pulses; {blk}"
            f"write_bytes {r['write_bytes'] / 1e6:.1f} MB; {r['commits']:,} commits "
            f"({r['commits_without_counts']:,} without counts); {r['elapsed_s']:.0f} s")
    say(f"\nmedians over {len(results)} day(s) (min-max):")
    for row in ROWS:
        values = [r[row.key] / row.scale for r in results if r[row.key] is not None]
        if not values:
            continue
        f = f"{{:,.{row.decimals}f}}"
        say(f"  {row.label}: {f.format(statistics.median(values))} {row.unit} "
            f"({f.format(min(values))}-{f.format(max(values))})")
    med = {row.key: statistics.median([r[row.key] for r in results]) for row in ROWS
           if all(r[row.key] is not None for r in results)}
    if "block_bytes" in med:
        say(f"  per commit at the block device: {med['block_bytes'] / med['commits'] / 1e3:.1f} kB")
    if args.json:
        print(json.dumps({"results": results, "medians": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
