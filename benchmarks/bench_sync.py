"""``kiosk sync`` of an imported backlog: client CPU per 10,000 totals.

The field case: a kiosk that has counted for a day and uploaded it, then gets two years
of history from its old counter with ``kiosk import --upload`` (4 sensors, 15-minute rows,
``period_minutes = 15``: 4 x 96 x 730 = 280,320 totals), and staff run ``kiosk sync``.
The reference receiver runs as a subprocess on 127.0.0.1 (``kiosk receiver``), so only the
client's CPU is counted: the user + system seconds of the ``kiosk sync`` process
(``os.wait4``), with its peak resident memory.

    .venv/bin/python benchmarks/bench_sync.py [--days 730] [--sensors 4] [--runs 3]
    .venv/bin/python benchmarks/bench_sync.py --days 14 --profile   # CPU profile of one sync

Prints the median over ``--runs`` of CPU seconds per 10,000 totals (target: under 1 s) and
the wall time; every run checks that the receiver holds every total afterwards.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
TOKEN = "bench-sync-token"
SENSORS = ("main-entrance", "east-gate", "library-door", "garage")


def write_csv(path: Path, *, end: int, days: int, sensors: int) -> int:
    """An old counter's export: 15-minute rows for ``days`` days before ``end`` (UTC s)."""
    start = end - days * 86400
    n = 0
    with path.open("w") as f:
        f.write("sensor_id,start,end,in,out\n")
        for sid in SENSORS[:sensors]:
            for t in range(start, end, 900):
                a = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
                b = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 900))
                v = (t // 900) % 37
                f.write(f"{sid},{a},{b},{v},{max(0, v - 2)}\n")
                n += 1
    return n


def config_text(tmp: Path, url: str, sensors: int) -> str:
    pins = (17, 27, 22, 23)
    text = (f'[device]\nid = "bench-01"\nsite = "bench-site"\ntimezone = "Europe/Helsinki"\n'
            f'[storage]\npath = "{tmp / "counts.db"}"\n')
    for sid, pin in zip(SENSORS[:sensors], pins, strict=False):
        text += f'[[sensors]]\nid = "{sid}"\ntype = "gpio"\npin = {pin}\n'
    return text + (f'[upload]\nurl = "{url}"\ntoken_file = "{tmp / "token"}"\n'
                   f"period_minutes = 15\ntimeout_s = 30\n")


def start_receiver(tmp: Path) -> tuple[subprocess.Popen, str]:
    """``kiosk receiver`` on a free port of 127.0.0.1 (its one line per request to a file)."""
    out = (tmp / "rx.log").open("w")
    proc = subprocess.Popen([PY, "-m", "kiosk", "receiver", "--port", "0", "--db",
                             str(tmp / "rx.db"), "--token-file", str(tmp / "token")],
                            stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        first = (tmp / "rx.log").read_text().partition("\n")
        if first[1]:
            if not first[0].startswith("listening on "):
                break
            return proc, first[0].split()[2]
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the receiver did not start: {(tmp / 'rx.log').read_text()!r}")


def kiosk(*args: str, quiet: bool = True) -> None:
    subprocess.run([PY, "-m", "kiosk", *args], check=True,
                   stdout=subprocess.DEVNULL if quiet else None)


def seed_counting_day(db: Path, now: int, sensors: int) -> None:
    """A day this kiosk counted itself (just before ``now``), so the import is history."""
    from kiosk.store import Store

    day = now - 86400
    with Store.open(db) as store, store.write() as conn:
        conn.executemany(
            "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(sid, t, 3, 2, now - 60) for sid in SENSORS[:sensors] for t in range(day, now, 900)])
        conn.execute("INSERT INTO runs (started_at, last_seen, stopped_at, pid, version,"
                     " stop_reason) VALUES (?, ?, ?, 1, 'bench', 'stop')", (day, now - 60, now - 60))


def run_once(days: int, sensors: int, profile: Path | None) -> tuple[int, float, float, float]:
    """(totals sent, client CPU seconds, wall seconds, peak RSS MB) of one ``kiosk sync``."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "token").write_text(TOKEN)
        os.chmod(tmp / "token", 0o600)
        now = int(time.time()) // 86400 * 86400 - 86400  # yesterday's UTC midnight
        rx, url = start_receiver(tmp)
        try:
            cfg = tmp / "kiosk.toml"
            cfg.write_text(config_text(tmp, url, sensors))
            seed_counting_day(tmp / "counts.db", now, sensors)
            kiosk("sync", "--config", str(cfg))  # the counted day: the outbox is up to date
            before = rx_count(tmp / "rx.db")
            rows = write_csv(tmp / "history.csv", end=now - 86400, days=days, sensors=sensors)
            kiosk("import", str(tmp / "history.csv"), "--config", str(cfg), "--upload")
            argv = [PY, "-m", "kiosk", "sync", "--config", str(cfg)]
            if profile is not None:  # a CPU-time profile (time.process_time), not wall time
                argv = [PY, "-c", "import cProfile, sys, time; from kiosk.cli import main; "
                        "p = cProfile.Profile(time.process_time); "
                        "p.runcall(main, sys.argv[3:]); p.dump_stats(sys.argv[1])",
                        str(profile), "--", *argv[3:]]
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
            _pid, status, usage = os.wait4(proc.pid, 0)  # its own rusage, not the receiver's
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise SystemExit(f"kiosk sync exited with {proc.returncode}")
            cpu = usage.ru_utime + usage.ru_stime
            peak = usage.ru_maxrss / 1024
            sent = rx_count(tmp / "rx.db") - before
            if sent != rows:
                raise SystemExit(f"the receiver holds {sent} new totals, expected {rows}")
        finally:
            rx.send_signal(signal.SIGTERM)
            rx.wait(timeout=30)
    return sent, cpu, wall, peak


def rx_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM totals").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=730, help="days of imported history")
    ap.add_argument("--sensors", type=int, default=4, choices=range(1, 5))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile one sync, print the top")
    args = ap.parse_args()
    if args.profile:
        out = Path(tempfile.mkdtemp()) / "sync.prof"
        run_once(args.days, args.sensors, out)
        pstats.Stats(str(out)).sort_stats("tottime").print_stats(30)
        return
    results = [run_once(args.days, args.sensors, None) for _ in range(args.runs)]
    n = results[0][0]
    per10k = [r[1] / n * 10_000 for r in results]
    print(f"kiosk sync after kiosk import --upload: {args.days} days x {args.sensors} sensors "
          f"of 15-minute rows = {n:,} totals, reference receiver subprocess on 127.0.0.1")
    print(f"  client CPU per 10,000 totals: median {statistics.median(per10k):.2f} s "
          f"(min {min(per10k):.2f}, max {max(per10k):.2f}, {args.runs} runs; target < 1 s)")
    print(f"  client CPU total: median {statistics.median(r[1] for r in results):.1f} s; "
          f"wall: median {statistics.median(r[2] for r in results):.1f} s; peak memory of "
          f"kiosk sync: median {statistics.median(r[3] for r in results):.0f} MB")


if __name__ == "__main__":
    main()
