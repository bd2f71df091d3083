"""Uploads against hostile servers on 127.0.0.1: memory, time, and the daemon's stop.

Run: .venv/bin/python benchmarks/bench_hostile.py [--runs 5]
Prints medians (and ranges) of:
  * ``kiosk sync`` (a real process) against the reference receiver, an endless 200 body,
    a 1.2 GB 200 body, and a server trickling one byte a second (timeout_s = 3): seconds,
    peak resident memory, and what the hostile server managed to send;
  * SIGTERM to ``kiosk run`` while its upload is trickled (timeout_s = 120): seconds to exit.
Targets: memory within 20 MB of the receiver run, trickle under timeout_s + 2 s, stop < 5 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiosk.receiver import Receiver  # noqa: E402
from tests.conftest import config_text, fill_sample_db, gpio_sensor, upload_section  # noqa: E402
from tests.hostile import HostileServer  # noqa: E402

TOKEN = "bench-token-0001"
SIMULATED = ('\n[[sensors]]\nid = "door"\ntype = "simulated"\nweekday_visits = 20000\n'
             'weekend_visits = 20000\nweekday_hours = "00:00-24:00"\nweekend_hours = "00:00-24:00"\n')


def sync_once(work: Path, url: str) -> tuple[float, float]:
    """One ``kiosk sync`` of a fresh 3-hour database: (seconds, peak RSS in MB)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    fill_sample_db(work / "counts.db", (time.time() // 3600) * 3600 - 6 * 3600)
    token = work / "token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    cfg = work / "kiosk.toml"
    cfg.write_text(config_text(work / "counts.db", gpio_sensor("a", 17) + gpio_sensor("b", 18),
                               extra=upload_section(url, token, timeout_s=3)))
    t = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kiosk", "sync", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return time.monotonic() - t, usage.ru_maxrss / 1024


def stop_once(work: Path) -> float:
    """Seconds from SIGTERM to exit of ``kiosk run`` whose upload is being trickled."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    token = work / "token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    with HostileServer("trickle") as server:
        cfg = work / "kiosk.toml"
        cfg.write_text(config_text(work / "counts.db", SIMULATED, flush=0.5,
                                   extra=upload_section(server.url, token, timeout_s=120,
                                                        jitter_s=0)))
        proc = subprocess.Popen([sys.executable, "-m", "kiosk", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not server.got_request.wait(30):
                raise SystemExit("the daemon never reached the trickling server")
            time.sleep(2.0)  # well into the trickle
            t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            return time.monotonic() - t
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def summary(values: list[float], unit: str, fmt: str = ".2f") -> str:
    return (f"{statistics.median(values):{fmt}} {unit} "
            f"({min(values):{fmt}}–{max(values):{fmt}})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        results: dict[str, tuple[list[float], list[float], list[float]]] = {}
        for name in ("receiver", "endless", "huge", "trickle"):
            secs: list[float] = []
            rss: list[float] = []
            sent: list[float] = []
            for _ in range(args.runs):
                if name == "receiver":
                    with Receiver(str(Path(tmp) / "rx.db"), token=TOKEN) as rx:
                        s, m = sync_once(work, rx.url)
                    sent.append(0)
                else:
                    with HostileServer(name) as server:
                        s, m = sync_once(work, server.url)
                        time.sleep(0.2)
                        sent.append(server.sent / 1e6)
                secs.append(s)
                rss.append(m)
            results[name] = (secs, rss, sent)
            print(f"kiosk sync vs {name:8}: {summary(secs, 's')}, peak RSS {summary(rss, 'MB', '.1f')}"
                  + (f", server sent {summary(sent, 'MB', '.2f')}" if name != "receiver" else ""))
        base = statistics.median(results["receiver"][1])
        for name in ("endless", "huge"):
            print(f"  peak RSS {name} / receiver: {statistics.median(results[name][1]) / base:.2f}")
        stops = [stop_once(work) for _ in range(args.runs)]
        print(f"SIGTERM during a trickled upload -> exit: {summary(stops, 's')}")


if __name__ == "__main__":
    main()
