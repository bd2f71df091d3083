#!/usr/bin/env python3
"""Counting benchmarks of the kiosk daemon: throughput, bursts, disk writes, memory, idle CPU.

Run from the project root (under 3 minutes on a 2-core x86 machine, ``--quick`` under one;
several times longer on a Raspberry Pi)::

    .venv/bin/python benchmarks/bench_counting.py [--quick] [--json] [--dir PATH]

Each measurement is repeated and summarised as median and min–max (2-core machines are
noisy).  What is measured:

1. Pulses per second counted end to end into SQLite, with zero loss (target ≥ 50,000/s):

   a. in-process: the real :class:`~kiosk.daemon.Daemon` loop in this process's main
      thread, producer thread(s) putting :class:`~kiosk.events.Pulse` objects on its queue
      as fast as they can; rate = N / (first put → a second connection sees all N).
      Also with the N pulses already queued when the loop starts (a backlog, as after a
      long stall): the writer alone.
   b. the serial path: ``python -m kiosk run`` as a subprocess reading a pty fed with
      ``IN`` lines as fast as the pty takes them; then SIGTERM and stored == written.

2. A burst of 1,000 pulses in 100 ms counted exactly: through the pty into the
   subprocess (SIGTERM 50 ms after the daemon has read the last byte; and, for
   information, SIGTERM right after the last write), and through a GPIO sensor on
   gpiozero's MockFactory in an in-process daemon (ManualClock with 50 µs pulses, and
   the real clock).
3. Bytes written and commits for a simulated 6,000-visit Monday at default settings
   (the day of ``benchmarks/bench_wear.py``, which also measures the block device).
4. Resident memory of the daemon after a simulated day (``--speed 14400``), target ≤ 50 MB.
5. CPU of an idle daemon with one serial sensor on a silent pty, target < 0.5 % of a core.

Databases go to a temporary directory under ``--dir`` (default: the system temp dir).
Put it on the device's real storage: on tmpfs an fsync is free and the numbers flatter.
The exit status is 1 when a measurement misses its target (or loses a pulse), else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from kiosk import __version__
from kiosk.clock import ManualClock, SystemClock
from kiosk.config import loads as config_from_text
from kiosk.daemon import HEARTBEAT_S, Daemon
from kiosk.events import Pulse

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
TZ = "Europe/Helsinki"
MONDAY = date(2026, 3, 2)  # a Monday in Helsinki, weeks away from a DST change
FEED_CHUNK = b"IN\n" * 21_845  # 64 KiB of serial lines
BURST = 1_000
BURST_S = 0.100
SPEED = 14_400.0  # a simulated day in 6 s

CONFIG = """\
[device]
id = "bench-kiosk-01"
site = "bench-site"
timezone = "{tz}"

[storage]
path = "{db}"
{sensors}"""

IDLE_SIMULATED = """
[[sensors]]
id = "door"
type = "simulated"
weekday_visits = 0
weekend_visits = 0
"""

SERIAL = """
[[sensors]]
id = "door"
type = "serial"
port = "{port}"
"""

GPIO = """
[[sensors]]
id = "door"
type = "gpio"
pin = 17
min_pulse_ms = {min_pulse_ms}
holdoff_ms = {holdoff_ms}
"""

SIMULATED_DAY = """
[[sensors]]
id = "door"
type = "simulated"
weekday_visits = 6000
weekend_visits = 6000
seed = {seed}
"""


# -- settings and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    runs: int
    pulses: int  # 1a, producer thread(s)
    backlog: int  # 1a, pre-queued
    serial_lines: int  # 1b
    producers: int
    seeds: tuple[int, ...]  # 3
    days: int  # 4
    idle_s: float  # 5
    idle_daemons: int  # 5
    base: Path  # where databases go
    socks: Path  # short path for notify sockets


@dataclass
class Metric:
    """One summary row: a value per run, a target and a verdict."""

    key: str
    label: str
    unit: str
    values: list[float] = field(default_factory=list)
    target: str = ""
    decimals: int = 0
    ok: bool | None = None  # None: no target
    problems: list[str] = field(default_factory=list)

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def judge(self, passes: Callable[[float], bool], *, every_run: bool = False) -> None:
        """Set the verdict from the median (or from every run); problems always fail."""
        if not self.values:
            self.ok = False
            return
        good = all(passes(v) for v in self.values) if every_run else passes(self.median())
        self.ok = good and not self.problems

    def fmt(self, value: float | None) -> str:
        return "–" if value is None else f"{value:,.{self.decimals}f}"

    def row(self) -> tuple[str, str, str, str, str]:
        span = (f"{self.fmt(min(self.values))}–{self.fmt(max(self.values))}" if self.values else "–")
        verdict = {None: "", True: "ok", False: "FAIL"}[self.ok]
        return (f"{self.label} [{self.unit}]", self.fmt(self.median()), span, self.target, verdict)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "unit": self.unit, "values": self.values,
                "median": self.median(), "min": min(self.values, default=None),
                "max": max(self.values, default=None), "target": self.target,
                "ok": self.ok, "problems": self.problems}


def say(text: str = "") -> None:
    print(text, flush=True)


def report(m: Metric, extra: str = "") -> Metric:
    """Print the one-line result of a measurement."""
    if m.values:
        line = (f"  => {m.label}: median {m.fmt(m.median())} {m.unit} "
                f"(min {m.fmt(min(m.values))}, max {m.fmt(max(m.values))}, "
                f"{len(m.values)} run{'s' if len(m.values) > 1 else ''})")
    else:
        line = f"  => {m.label}: no result"
    if m.target:
        line += f"; target {m.target}: {'ok' if m.ok else 'FAIL'}"
    say(line + (f"; {extra}" if extra else ""))
    for p in m.problems:
        say(f"     PROBLEM: {p}")
    return m


# -- /proc helpers ----------------------------------------------------------------------------


def machine(base: Path) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        info = dict(line.split(":", 1) for line in f if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        # x86: "model name"; Raspberry Pi: "Model" (the board) and maybe "model name" (the core)
        names = [info.get("Model"), info.get("model name") or info.get("Hardware")]
        cpu = ", ".join(n for n in names if n) or cpu
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "sqlite": sqlite3.sqlite_version,
        "kiosk": __version__,
        "db_dir": str(base),
        "db_fs": fs_type(base),
    }


def fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mount = parts[1].replace("\\040", " ")
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, ... of /proc/PID/status in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Vm"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (clock ticks turned into seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def wakeups(pid: int) -> dict[int, int]:
    """Context switches (voluntary + not) of each thread of ``pid``, by thread id."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/status") as f:
            out[int(task)] = sum(int(line.split()[1]) for line in f if line.startswith(
                ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
    return out


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


# -- processes, ptys and databases -------------------------------------------------------------


@contextlib.contextmanager
def workdir(s: Settings, name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=s.base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(path: Path, sensors: str) -> Path:
    """A config file with default [storage] settings and the database next to it."""
    path.write_text(config_text(path.parent / "counts.db", sensors))
    return path


_SOCKETS = itertools.count(1)


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, s: Settings) -> None:
        self.path = str(s.socks / f"notify-{next(_SOCKETS)}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, text: str, timeout: float = 30.0, alive: Callable[[], bool] = lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in m for m in self.messages):
            left = deadline - time.monotonic()
            if left <= 0 or not alive():
                raise RuntimeError(f"no {text} from the daemon")
            self.sock.settimeout(min(left, 0.2))
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode(errors="replace"))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


@contextlib.contextmanager
def notify_env(path: str) -> Iterator[None]:
    """$NOTIFY_SOCKET for an in-process daemon, so that its READY=1 can be awaited."""
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        else:
            os.environ["NOTIFY_SOCKET"] = old


class DaemonProcess:
    """``python -m kiosk run`` as a real subprocess with a notify socket."""

    def __init__(self, s: Settings, config: Path, *args: str) -> None:
        self.notify = NotifySocket(s)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, PYTHONUNBUFFERED="1")
        for var in ("KIOSK_CONFIG", "KIOSK_DEBUG", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(var, None)
        self.log_path = config.parent / "daemon.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kiosk", "run", "--config", str(config), *args],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            self.notify.wait_for("READY=1", timeout, alive=lambda: self.proc.poll() is None)
        except RuntimeError:
            raise RuntimeError(f"daemon not ready; its log:\n{self.log_tail()}") from None

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pty:
    """A pseudo-terminal: the daemon opens ``port``, the benchmark writes to the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)

    def write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def unread(self) -> int:
        """Bytes written but not yet read by the daemon."""
        return int.from_bytes(fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)

    def wait_drained(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while (left := self.unread()) and time.monotonic() < deadline:
            time.sleep(0.001)
        return left

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)

    def __enter__(self) -> Pty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored_in(db: Path) -> int:
    """Visitors in, summed over every bucket, through a fresh connection."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return int(conn.execute("SELECT coalesce(sum(in_count), 0) FROM counts").fetchone()[0])
    finally:
        conn.close()


def wait_committed(conn: sqlite3.Connection, target: int, *,
                   settled: Callable[[], bool] | None = None, stall_s: float | None = None,
                   timeout: float = 120.0) -> tuple[int, float]:
    """Poll a second connection until ``target`` visitors are committed or no more can come.

    No more can come when ``settled()`` held on two polls in a row (checked before each
    query, so the query sees every commit made before), or nothing changed for
    ``stall_s`` seconds.  Returns (stored, perf_counter time of the first poll that saw
    that value).
    """
    last, t_last = -1, time.perf_counter()
    deadline = t_last + timeout
    calm = 0
    while True:
        calm = calm + 1 if settled is not None and settled() else 0
        stored = int(conn.execute("SELECT coalesce(sum(in_count), 0) FROM counts").fetchone()[0])
        now = time.perf_counter()
        if stored != last:
            last, t_last = stored, now
        stalled = stall_s is not None and now - t_last > stall_s
        if stored >= target or calm >= 2 or stalled or now > deadline:
            return stored, t_last
        time.sleep(0.005)


def run_daemon_inprocess(s: Settings, daemon: Daemon, driver: Callable[[Daemon], None]) -> Daemon:
    """Run ``daemon.run()`` here (it must own the main thread: it installs signal handlers)
    while ``driver(daemon)`` runs in a thread from READY=1 on; then stop the daemon."""
    notify = NotifySocket(s)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            notify.wait_for("READY=1", 60)
            driver(daemon)
        except BaseException as e:
            errors.append(e)
        finally:
            daemon.request_stop()

    thread = threading.Thread(target=body, name="bench-driver", daemon=True)
    try:
        with notify_env(notify.path):
            thread.start()
            daemon.run()
        if getattr(daemon, "_stop_signal", None) == signal.SIGINT:
            raise KeyboardInterrupt
        thread.join(60)
    finally:
        notify.close()
    if errors:
        raise errors[0]
    return daemon


def make_daemon(cfg_text: str, clock: Any, pin_factory: Any = None) -> Daemon:
    return Daemon(config_from_text(cfg_text, source="<bench>"), clock=clock, pin_factory=pin_factory)


def config_text(db: Path, sensors: str) -> str:
    return CONFIG.format(tz=TZ, db=db, sensors=sensors)


# -- 1a. in-process throughput --------------------------------------------------------------


def bench_inprocess(s: Settings, *, backlog: bool) -> Metric:
    n = s.backlog if backlog else s.pulses
    how = ("pre-queued backlog" if backlog
           else f"{s.producers} producer thread{'s' if s.producers > 1 else ''}")
    m = Metric("pulses_per_s_inprocess" + ("_backlog" if backlog else ""),
               f"pulses/s in-process, {how} ({n:,} pulses)", "pulses/s",
               target="≥ 50,000, no loss")
    say(f"\n1a. {n:,} Pulses into the real Daemon loop in this process, {how}; "
        f"rate = N / (first put → all N committed, seen from a second connection), which "
        f"includes waiting up to one flush interval for the last commit")
    for run in range(1, s.runs + 1):
        with workdir(s, "inproc") as d:
            got = inprocess_run(s, d / "counts.db", n, backlog=backlog)
        seconds = got["t_done"] - got["t0"]
        m.values.append(n / seconds)
        if got["final"] != n:
            m.problems.append(f"run {run}: lost {n - got['final']:,} of {n:,} pulses "
                              f"(stored {got['final']:,} once the daemon had stopped)")
        prod = "" if backlog else f", producer {n / (got['t_end'] - got['t0']):,.0f} puts/s"
        say(f"  run {run}: {got['final']:,}/{n:,} stored; all committed after {seconds:.2f} s = "
            f"{m.values[-1]:,.0f} pulses/s (queue empty after {got['t_empty'] - got['t0']:.2f} s"
            f"{prod}, peak queue {got['peak']:,}, {got['flushes']} flushes)")
    m.judge(lambda v: v >= 50_000)
    return report(m)


def inprocess_run(s: Settings, db: Path, n: int, *, backlog: bool) -> dict[str, Any]:
    """One in-process run; returns times (perf_counter), the peak queue depth and counts."""
    clock = SystemClock()
    daemon = make_daemon(config_text(db, IDLE_SIMULATED), clock)
    got: dict[str, Any] = {}

    def settled() -> bool:  # everything taken from the queue and flushed
        return daemon.queue.qsize() == 0 and not daemon.writer.pending

    def drive(daemon: Daemon) -> None:
        conn = sqlite3.connect(db, timeout=10)
        if backlog:
            t0, t_end, peak = got["t0"], got["t0"], n
        else:
            t0, t_end, peak = produce(daemon, clock, n, s.producers)
        while daemon.queue.qsize():
            time.sleep(0.002)
        t_empty = time.perf_counter()
        stored, t_done = wait_committed(conn, n, settled=settled)
        conn.close()
        got.update(t0=t0, t_end=t_end, t_empty=t_empty, t_done=t_done, stored=stored, peak=peak)

    if backlog:
        for _ in range(n):
            daemon.queue.put(Pulse("door", clock.now(), "in", 1))
        got["t0"] = time.perf_counter()  # includes the daemon's start-up (a few ms)
    run_daemon_inprocess(s, daemon, drive)
    got["final"] = stored_in(db)
    got["flushes"] = daemon.writer.stats.flushes
    return got


def produce(daemon: Daemon, clock: Any, n: int, threads: int) -> tuple[float, float, int]:
    """Put ``n`` pulses from ``threads`` threads as fast as they go.

    Returns (time of the first put, time of the last put, peak queue depth seen).
    """
    put, now = daemon.queue.put, clock.now
    barrier = threading.Barrier(threads + 1)
    ends: list[float] = []

    def work(count: int) -> None:
        barrier.wait()
        for _ in range(count):
            put(Pulse("door", now(), "in", 1))
        ends.append(time.perf_counter())

    workers = [threading.Thread(target=work, args=(n // threads + (i < n % threads),), daemon=True)
               for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    peak = 0
    while any(w.is_alive() for w in workers):
        peak = max(peak, daemon.queue.qsize())
        time.sleep(0.005)
    return t0, max(ends), peak


# -- 1b. the serial path ------------------------------------------------------------------------


def bench_serial(s: Settings) -> list[Metric]:
    n = s.serial_lines
    feed = Metric("lines_per_s_pty", f"serial lines/s taken by the pty ({n:,} lines)", "lines/s")
    e2e = Metric("pulses_per_s_serial", f"pulses/s end to end, pty → subprocess ({n:,} lines)",
                 "pulses/s", target="≥ 50,000, no loss")
    hwm = Metric("serial_flood_hwm", f"daemon VmHWM after the {n:,}-line serial flood", "MB",
                 decimals=1)
    say(f"\n1b. {n:,} 'IN' lines written to a pty as fast as it takes them, read by "
        f"`python -m kiosk run` (subprocess); then SIGTERM")
    for run in range(1, s.runs + 1):
        with workdir(s, "serial") as d, Pty() as pty:
            cfg = write_config(d / "kiosk.toml", SERIAL.format(port=pty.port))
            db = d / "counts.db"
            with DaemonProcess(s, cfg) as proc:
                proc.wait_ready()
                time.sleep(0.3)
                conn = sqlite3.connect(db, timeout=10)
                t0 = time.perf_counter()
                left = n
                while left:
                    k = min(left, len(FEED_CHUNK) // 3)
                    pty.write_all(FEED_CHUNK[: 3 * k])
                    left -= k
                t_fed = time.perf_counter()
                unread = pty.wait_drained()
                stored, t_done = wait_committed(conn, n, stall_s=5.0)
                conn.close()
                mem = proc_status(proc.pid)
                peak, rss = mem["VmHWM"] / 1024, mem["VmRSS"] / 1024
                rc = proc.terminate()
            final = stored_in(db)
            feed.values.append(n / (t_fed - t0))
            e2e.values.append(n / (t_done - t0))
            hwm.values.append(peak)
            if final != n or rc != 0 or unread:
                e2e.problems.append(f"run {run}: wrote {n:,}, stored {final:,} after SIGTERM "
                                    f"(exit status {rc}, {unread} bytes never read)")
            say(f"  run {run}: pty took {n:,} lines in {t_fed - t0:.2f} s = {feed.values[-1]:,.0f}/s; "
                f"{stored:,} committed after {t_done - t0:.2f} s = {e2e.values[-1]:,.0f} pulses/s; "
                f"after SIGTERM stored {final:,}/{n:,}; daemon VmHWM {peak:.1f} MB, VmRSS {rss:.1f} MB")
    e2e.judge(lambda v: v >= 50_000)
    report(feed)
    report(e2e)
    return [feed, e2e, report(hwm, "memory held while a flood is absorbed")]


# -- 2. bursts ----------------------------------------------------------------------------------


def spin_until(t: float) -> None:
    while time.perf_counter() < t:
        pass


def bench_burst_pty(s: Settings, *, settle: float) -> Metric:
    """``settle`` > 0: SIGTERM that long after the daemon has taken every byte from the pty
    (the counts are still in memory: the flush interval is 2 s).  0: SIGTERM right after
    the last write, while the last bytes may still be on their way through the kernel."""
    when = f"SIGTERM {settle * 1000:.0f} ms after" if settle else "SIGTERM at once"
    m = Metric("burst_pty" + ("" if settle else "_sigterm_at_once"),
               f"burst {BURST:,} in {BURST_S * 1000:.0f} ms, pty → subprocess, {when}: stored",
               "pulses", target=f"= {BURST:,} every run" if settle else "")
    say(f"  pty → subprocess: {BURST:,} separate 'IN' writes {BURST_S / BURST * 1e6:.0f} µs apart, "
        + (f"then SIGTERM {settle * 1000:.0f} ms after the daemon has read them" if settle
           else "then SIGTERM at once (no time for the last bytes to reach the daemon)"))
    for run in range(1, s.runs + 1):
        with workdir(s, "burst") as d, Pty() as pty:
            cfg = write_config(d / "kiosk.toml", SERIAL.format(port=pty.port))
            with DaemonProcess(s, cfg) as proc:
                proc.wait_ready()
                time.sleep(0.3)
                t0 = time.perf_counter()
                for i in range(BURST):
                    spin_until(t0 + i * BURST_S / BURST)
                    os.write(pty.master, b"IN\n")
                span = time.perf_counter() - t0
                unread = pty.wait_drained() if settle else 0
                time.sleep(settle)
                rc = proc.terminate()
            final = stored_in(d / "counts.db")
        m.values.append(final)
        if rc != 0 or unread or (settle and final != BURST):
            m.problems.append(f"run {run}: wrote {BURST}, stored {final} (exit status {rc}, "
                              f"{unread} bytes never read)")
        say(f"  run {run}: {BURST} lines written in {span * 1000:.1f} ms; stored {final} "
            f"after SIGTERM" + ("" if final == BURST else f": {BURST - final} LOST"))
    if settle:
        m.judge(lambda v: v == BURST, every_run=True)
    lost = sum(BURST - v for v in m.values)
    return report(m, "" if settle else f"{lost} line(s) lost in {len(m.values)} runs")


def bench_burst_gpio(s: Settings, *, manual: bool) -> Metric | None:
    what = "ManualClock" if manual else "real clock"
    m = Metric("burst_gpio_" + ("manual" if manual else "real"),
               f"burst {BURST:,} in {BURST_S * 1000:.0f} ms, GPIO mock, {what}: stored",
               "pulses", target=f"= {BURST:,} every run")
    try:
        importlib.import_module("kiosk.sensors.gpio")
        mock = importlib.import_module("gpiozero.pins.mock")
    except ImportError as e:
        say(f"  GPIO ({what}): skipped ({e})")
        return None
    half = BURST_S / BURST / 2  # 50 µs blocked, 50 µs clear
    # ManualClock: the debounce filters stay on, set below the pulse length; real clock:
    # off, since a Python thread cannot hold 50 µs exactly.
    opts = ({"min_pulse_ms": half * 600, "holdoff_ms": half * 600} if manual
            else {"min_pulse_ms": 0, "holdoff_ms": 0})
    say(f"  GPIOSensor on MockFactory in an in-process Daemon, {what}: pulses of "
        f"{half * 1e6:.0f} µs every {2 * half * 1e6:.0f} µs (min_pulse_ms={opts['min_pulse_ms']:g}, "
        f"holdoff_ms={opts['holdoff_ms']:g})")
    for run in range(1, s.runs + 1):
        with workdir(s, "gpio") as d:
            db = d / "counts.db"
            clock = ManualClock(time.time()) if manual else SystemClock()
            factory = mock.MockFactory()
            daemon = make_daemon(config_text(db, GPIO.format(**opts)), clock, factory)
            got: dict[str, Any] = {}
            run_daemon_inprocess(s, daemon, lambda daemon, c=clock, f=factory, g=got:
                                 gpio_pulses(daemon, c, f, half, g))
            final = stored_in(db)
        m.values.append(final)
        st = got["status"]
        if final != BURST:
            m.problems.append(f"run {run}: {BURST} pulses driven, {final} stored "
                              f"(noise {st['noise']}, chatter {st['chatter']})")
        span = (f"{BURST_S * 1000:.0f} ms of clock time" if manual
                else f"{got['span'] * 1000:.1f} ms real time")
        say(f"  run {run}: {BURST} pulses driven over {span}; the sensor counted {st['counted']} "
            f"(noise {st['noise']}, chatter {st['chatter']}); stored {final}")
    m.judge(lambda v: v == BURST, every_run=True)
    return report(m)


def gpio_pulses(daemon: Daemon, clock: Any, factory: Any, half: float, got: dict[str, Any]) -> None:
    """Drive BURST pulses on the mock pin of the daemon's GPIO sensor."""
    sensor = daemon.sensors[0]
    pin = factory.pin(17)
    block, clear = ((pin.drive_high, pin.drive_low) if sensor.active_high
                    else (pin.drive_low, pin.drive_high))
    manual = isinstance(clock, ManualClock)
    t0 = time.perf_counter()
    for i in range(BURST):
        if manual:
            block()
            clock.advance(half)
            clear()
            clock.advance(half)
        else:
            spin_until(t0 + 2 * i * half)
            block()
            spin_until(t0 + (2 * i + 1) * half)
            clear()
    got["span"] = time.perf_counter() - t0
    got["status"] = sensor.status()


# -- 3. disk writes of a simulated day ----------------------------------------------------------


def bench_disk_day(s: Settings) -> list[Metric]:
    """The simulated day of ``benchmarks/bench_wear.py`` (the real daemon loop, two
    entrances, default settings), measured here by ``write_bytes`` only; ``bench_wear.py``
    run as root measures it at the block device too."""
    import bench_wear  # beside this file

    say(f"\n3. A simulated {bench_wear.VISITS:,}-visit Monday ({bench_wear.MONDAY}) through the "
        f"daemon loop at default settings; seeds {', '.join(map(str, s.seeds))} "
        f"(the block-device figures: benchmarks/bench_wear.py)")
    ms = {
        "write_bytes": Metric("bytes_day", "bytes the daemon dirtied per day (write_bytes)",
                              "MB/day", decimals=1),
        "commits": Metric("commits_day", "commits per day", "commits"),
        "commits_without_counts": Metric("commits_day_no_counts",
                                         "commits per day carrying no counts", "commits"),
        "db_bytes": Metric("db_size_day", "database size after the day", "kB"),
    }
    scale = {"write_bytes": 1e6, "commits": 1, "commits_without_counts": 1, "db_bytes": 1e3}
    for seed in s.seeds:
        with workdir(s, "day") as d:
            r = bench_wear.simulate_day(seed, d, None)
        for key, m in ms.items():
            m.values.append(r[key] / scale[key])
        say(f"  seed {seed}: {r['visits']:,} visits ({r['pulses']:,} pulses), {r['commits']:,} "
            f"commits ({r['commits_without_counts']:,} without counts), write_bytes "
            f"{r['write_bytes'] / 1e6:.1f} MB")
    for m in ms.values():
        report(m)
    return list(ms.values())


# -- 4. memory after a simulated day ------------------------------------------------------------


def simulated_hours(conn: sqlite3.Connection) -> float:
    row = conn.execute("SELECT started_at, last_seen FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    return 0.0 if row is None else (row[1] - row[0]) / 3600


def bench_memory(s: Settings) -> list[Metric]:
    rss = Metric("rss_day", "daemon VmRSS after a simulated day", "MB", target="≤ 50", decimals=1)
    hwm = Metric("hwm_day", "daemon VmHWM after a simulated day", "MB", target="≤ 50", decimals=1)
    grow = Metric("rss_growth", f"daemon VmRSS growth, day 1 → day {s.days}", "MB", decimals=1)
    say(f"\n4. `python -m kiosk run --speed {SPEED:g}`, one simulated sensor (6,000 visits every day), "
        f"{s.runs} daemons side by side for {s.days} simulated day(s) each")
    with contextlib.ExitStack() as stack:
        procs = []
        for run in range(1, s.runs + 1):
            d = stack.enter_context(workdir(s, "memory"))
            cfg = write_config(d / "kiosk.toml", SIMULATED_DAY.format(seed=run))
            procs.append((d, stack.enter_context(DaemonProcess(s, cfg, "--speed", f"{SPEED:g}"))))
        ready = []
        for d, proc in procs:
            proc.wait_ready()
            ready.append((proc_status(proc.pid)["VmRSS"] / 1024,
                          sqlite3.connect(d / "counts.db", timeout=10)))
        seen: list[list[tuple[float, float]]] = [[] for _ in procs]
        deadline = time.monotonic() + s.days * 86400 / SPEED + 30
        while any(len(v) < s.days for v in seen) and time.monotonic() < deadline:
            for i, (_d, proc) in enumerate(procs):
                day = len(seen[i]) + 1
                if day <= s.days and simulated_hours(ready[i][1]) >= 24 * day:
                    st = proc_status(proc.pid)
                    seen[i].append((st["VmRSS"] / 1024, st["VmHWM"] / 1024))
            time.sleep(0.05)
        for run, ((d, proc), (rss0, conn), days) in enumerate(zip(procs, ready, seen, strict=True), 1):
            hours = simulated_hours(conn)
            conn.close()
            rc = proc.terminate()
            visits = stored_in(d / "counts.db")
            if len(days) < s.days:
                rss.problems.append(f"run {run}: only {hours:.1f} simulated hours covered")
                continue
            rss.values.append(days[0][0])
            hwm.values.append(days[0][1])
            if s.days > 1:
                grow.values.append(days[-1][0] - days[0][0])
            if rc:
                rss.problems.append(f"run {run}: exit status {rc}")
            per_day = ", ".join(f"day {i}: VmRSS {r:.1f} MB VmHWM {h:.1f} MB"
                                for i, (r, h) in enumerate(days, 1))
            say(f"  run {run}: VmRSS at READY {rss0:.1f} MB; {per_day}; {visits:,} visits counted "
                f"in {hours:.1f} simulated hours")
    rss.judge(lambda v: v <= 50)
    hwm.judge(lambda v: v <= 50)
    out = [report(rss), report(hwm)]
    if grow.values:
        out.append(report(grow))
    return out


# -- 5. idle CPU ----------------------------------------------------------------------------------


def bench_idle(s: Settings) -> list[Metric]:
    cpu = Metric("idle_cpu", "idle CPU, one serial sensor, silent pty", "% of a core",
                 target="< 0.5", decimals=2)
    wake = Metric("idle_wakeups", "idle context switches (all threads)", "/s", decimals=1)
    k = s.idle_daemons
    say(f"\n5. {k} idle daemons side by side, each with one serial sensor on its own silent pty; "
        f"utime + stime over {s.idle_s:g} s, 2 s after READY")
    with contextlib.ExitStack() as stack:
        procs = []
        for _ in range(k):
            d = stack.enter_context(workdir(s, "idle"))
            pty = stack.enter_context(Pty())
            cfg = write_config(d / "kiosk.toml", SERIAL.format(port=pty.port))
            procs.append(stack.enter_context(DaemonProcess(s, cfg)))
        for proc in procs:
            proc.wait_ready()
        time.sleep(2.0)
        t0 = time.monotonic()
        before = [(cpu_seconds(p.pid), wakeups(p.pid)) for p in procs]
        time.sleep(s.idle_s)
        after = [(cpu_seconds(p.pid), wakeups(p.pid)) for p in procs]
        dt = time.monotonic() - t0
        for i, (proc, (c0, w0), (c1, w1)) in enumerate(zip(procs, before, after, strict=True), 1):
            cpu.values.append(100 * (c1 - c0) / dt)
            per_thread = {tid: (n - w0.get(tid, 0)) / dt for tid, n in w1.items()}
            wake.values.append(sum(per_thread.values()))
            main_thread = per_thread.pop(proc.pid, 0.0)
            rc = proc.terminate()
            if rc:
                cpu.problems.append(f"daemon {i}: exit status {rc}")
            say(f"  daemon {i}: {1000 * (c1 - c0):.0f} ms CPU in {dt:.1f} s = {cpu.values[-1]:.2f} % "
                f"of a core; {wake.values[-1]:.1f} context switches/s (main thread {main_thread:.1f}, "
                f"{len(per_thread)} other thread(s) {sum(per_thread.values()):.1f})")
    cpu.judge(lambda v: v < 0.5)
    say(f"  (resolution: one clock tick = {1000 / CLK_TCK:.0f} ms = {100 / CLK_TCK / s.idle_s:.2f} % "
        f"over the window; a {HEARTBEAT_S:g} s heartbeat flush may or may not fall inside it)")
    return [report(cpu), report(wake)]


# -- main -----------------------------------------------------------------------------------------


MEASUREMENTS = ("throughput", "serial", "burst", "disk", "memory", "idle")


def summary(metrics: list[Metric]) -> None:
    rows = [("metric [unit]", "median", "min–max", "target", "")] + [m.row() for m in metrics]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    say()
    for i, r in enumerate(rows):
        say(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  "
            f"{r[3]:<{widths[3]}}  {r[4]}".rstrip())
        if i == 0:
            say("-" * (sum(widths) + 8))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer runs and smaller N (about 1 minute)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON at the end")
    p.add_argument("--runs", type=int, help="repetitions per measurement (default 5, quick 3)")
    p.add_argument("--producers", type=int, default=1, help="producer threads for 1a (default 1)")
    p.add_argument("--dir", type=Path, help="directory for the databases (default: temp dir); "
                   "use the device's real storage")
    p.add_argument("--only", action="append", choices=MEASUREMENTS,
                   help="run only this measurement (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_all(args)
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130


def run_all(args: argparse.Namespace) -> int:
    quick = args.quick
    base_parent = (args.dir or Path(tempfile.gettempdir())).resolve()
    base_parent.mkdir(parents=True, exist_ok=True)
    only = set(args.only or MEASUREMENTS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-", dir=base_parent) as base, \
            tempfile.TemporaryDirectory(prefix="kb-") as socks:
        s = Settings(
            runs=args.runs or (3 if quick else 5),
            pulses=200_000 if quick else 1_000_000,
            backlog=300_000 if quick else 1_000_000,
            serial_lines=200_000 if quick else 1_000_000,
            producers=max(1, args.producers),
            seeds=(1,) if quick else (1, 2, 3),
            days=1 if quick else 2,
            idle_s=5.0 if quick else 20.0,
            idle_daemons=3 if quick else 5,
            base=Path(base),
            socks=Path(socks),
        )
        info = machine(Path(base))
        say(f"machine: {info['nproc']} CPU(s), {info['cpu']} ({info['machine']}), Linux {info['kernel']}; "
            f"Python {info['python']}, SQLite {info['sqlite']}, kiosk {info['kiosk']}")
        say(f"databases in {info['db_dir']} ({info['db_fs']}); {s.runs} runs per measurement"
            + (" (--quick)" if quick else ""))
        if info["db_fs"] in ("tmpfs", "ramfs"):
            say("WARNING: the databases are on a RAM file system: fsync is free, disk numbers flatter")
        metrics: list[Metric] = []
        if "throughput" in only:
            metrics.append(bench_inprocess(s, backlog=False))
            metrics.append(bench_inprocess(s, backlog=True))
        if "serial" in only:
            metrics += bench_serial(s)
        if "burst" in only:
            say(f"\n2. Bursts of {BURST:,} pulses in {BURST_S * 1000:.0f} ms, counted exactly")
            metrics.append(bench_burst_pty(s, settle=0.05))
            metrics.append(bench_burst_pty(s, settle=0.0))
            for manual in (True, False):
                m = bench_burst_gpio(s, manual=manual)
                if m is not None:
                    metrics.append(m)
        if "disk" in only:
            metrics += bench_disk_day(s)
        if "memory" in only:
            metrics += bench_memory(s)
        if "idle" in only:
            metrics += bench_idle(s)
    elapsed = time.monotonic() - started
    summary(metrics)
    failed = [m for m in metrics if m.ok is False]
    say(f"\n{len(metrics)} metrics in {elapsed:.0f} s; "
        + (f"{len(failed)} missed their target: {', '.join(m.key for m in failed)}" if failed
           else "every target met"))
    if args.json:
        settings = {k: v for k, v in s.__dict__.items() if not isinstance(v, Path)}
        print(json.dumps({"machine": info, "settings": settings,
                          "elapsed_s": round(elapsed, 1),
                          "metrics": [m.as_dict() for m in metrics]}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
