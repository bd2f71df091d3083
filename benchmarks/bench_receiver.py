"""The reference receiver under hostile clients on 127.0.0.1: memory, database size, stop time.

Runs ``kiosk receiver`` (with a token) as a subprocess and measures, from outside:

* its resident memory (VmRSS in /proc/PID/status) before and after 100 unauthenticated
  POSTs announcing and sending 1 MB bodies;
* its database size before and after 300 unauthenticated POSTs with a 60 KB User-Agent
  (and 300 with a 10 KB one, which fits the request-head limit);
* the seconds from SIGTERM to exit with 300 slow clients connected, each trickling
  a byte of its request every 0.5 s.

    .venv/bin/python benchmarks/bench_receiver.py [--runs 3] [--src DIR]

``--src`` runs the receiver from another checkout (e.g. an older commit, for a before/after).
Prints medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOKEN = "bench-receiver-token"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def db_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


class Receiver:
    def __init__(self, tmp: Path, src: str | None) -> None:
        (tmp / "token").write_text(TOKEN)
        self.db = tmp / "rx.db"
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src
        self.log = (tmp / "rx.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "receiver", "--port", "0", "--db", str(self.db),
             "--token-file", str(tmp / "token")], stdout=self.log, stderr=subprocess.STDOUT,
            env=env, cwd=tmp)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first = (tmp / "rx.log").read_text().partition("\n")
            if first[1]:
                host, port = first[0].split()[2].split("/")[2].rsplit(":", 1)
                self.addr = (host, int(port))
                return
            time.sleep(0.05)
        raise SystemExit("the receiver did not start")

    def post(self, *, length: int, send: int, user_agent: str = "bench") -> None:
        """One unauthenticated POST; the client sends ``send`` bytes of the body and reads
        whatever answer comes (a reset is an answer too)."""
        head = (f"POST /api/v1/visitor-counts HTTP/1.1\r\nHost: x\r\nUser-Agent: {user_agent}"
                f"\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\n"
                f"Idempotency-Key: {'ab' * 32}\r\nContent-Length: {length}\r\n\r\n").encode()
        with socket.create_connection(self.addr, timeout=10) as s:
            try:
                s.sendall(head)
                chunk = b"x" * 65536
                left = send
                while left > 0:
                    left -= s.send(chunk[:left])
                s.recv(4096)
            except OSError:
                pass

    def stop(self) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return float("inf")
        return time.monotonic() - t0


def memory_case(src: str | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        rx = Receiver(Path(d), src)
        before = rss_mb(rx.proc.pid)
        threads = [threading.Thread(target=rx.post, kwargs={"length": 1_000_000,
                                                             "send": 1_000_000})
                   for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = rss_mb(rx.proc.pid)
        rx.stop()
    return before, after


def database_case(src: str | None, ua_bytes: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        rx = Receiver(Path(d), src)
        before = db_mb(rx.db)
        for _ in range(300):
            rx.post(length=2, send=2, user_agent="u" * ua_bytes)
        rx.stop()
        after = db_mb(rx.db)
    return before, after


def stop_case(src: str | None) -> float:
    with tempfile.TemporaryDirectory() as d:
        rx = Receiver(Path(d), src)
        socks = []
        for _ in range(300):
            try:
                socks.append(socket.create_connection(rx.addr, timeout=5))
            except OSError:
                pass
        done = threading.Event()

        def trickle() -> None:
            head = b"POST /api/v1/visitor-counts HTTP/1.1\r\nHost: x\r\n"
            i = 0
            while not done.wait(0.5):
                for s in socks:
                    try:
                        s.send(head[i % len(head):i % len(head) + 1])
                    except OSError:
                        pass
                i += 1

        t = threading.Thread(target=trickle)
        t.start()
        time.sleep(2)
        took = rx.stop()
        done.set()
        t.join()
        for s in socks:
            s.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--src", help="run the receiver from this source tree (PYTHONPATH)")
    args = ap.parse_args()
    med = statistics.median
    mem = [memory_case(args.src) for _ in range(args.runs)]
    big = [database_case(args.src, 60_000) for _ in range(args.runs)]
    small = [database_case(args.src, 10_000) for _ in range(args.runs)]
    stops = [stop_case(args.src) for _ in range(args.runs)]
    print(f"reference receiver subprocess on 127.0.0.1, medians of {args.runs} runs"
          + (f" (source {args.src})" if args.src else ""))
    print(f"  RSS, 100 unauthenticated 1 MB POSTs:  {med(m[0] for m in mem):.0f} -> "
          f"{med(m[1] for m in mem):.0f} MB")
    print(f"  database, 300 unauthenticated POSTs, 60 KB User-Agent: "
          f"{med(b[0] for b in big):.2f} -> {med(b[1] for b in big):.2f} MB")
    print(f"  database, 300 unauthenticated POSTs, 10 KB User-Agent: "
          f"{med(b[0] for b in small):.2f} -> {med(b[1] for b in small):.2f} MB")
    print(f"  SIGTERM to exit with 300 slow clients: {med(stops):.1f} s")


if __name__ == "__main__":
    main()
