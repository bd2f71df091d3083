"""Backlog drain: 90 days x 2 sensors of hourly totals to the reference receiver on loopback.

Run: .venv/bin/python benchmarks/bench_upload.py [--days 90] [--runs 5]
Prints requests made and seconds taken (targets: under 5 s, at most 25 requests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from kiosk import config
from kiosk import receiver as rx
from kiosk.clock import ManualClock
from kiosk.store import Store
from kiosk.upload import Uploader

T0 = 1_780_000_000 // 3600 * 3600  # an hour boundary in 2026


def build(db: Path, days: int) -> None:
    store = Store.open(db)
    hours = days * 24
    with store.write() as conn:
        conn.executemany(
            "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(sid, T0 + h * 3600 + q * 900, 20 + h % 7, 19 + h % 5, T0)
             for sid in ("main-entrance", "east-gate") for h in range(hours) for q in range(4)])
        conn.execute("INSERT INTO runs (started_at, last_seen, stopped_at, pid, version)"
                     " VALUES (?, ?, ?, 1, 'bench')", (T0, T0 + hours * 3600, T0 + hours * 3600))
        conn.executemany("INSERT INTO sensors (sensor_id, kind, state, updated_at)"
                         " VALUES (?, 'gpio', 'ok', ?)", [("main-entrance", T0), ("east-gate", T0)])
    store.close()


def run_once(days: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        build(tmp / "counts.db", days)
        token = tmp / "token"
        token.write_text("bench-token")
        os.chmod(token, 0o600)
        with rx.Receiver(str(tmp / "rx.db"), token="bench-token") as receiver:
            cfg = config.loads(f"""
[device]
id = "bench-01"
site = "bench-site"
[storage]
path = "{tmp / 'counts.db'}"
[[sensors]]
id = "main-entrance"
type = "gpio"
pin = 17
[[sensors]]
id = "east-gate"
type = "gpio"
pin = 27
[upload]
url = "{receiver.url}"
token_file = "{token}"
""")
            store = Store.open(tmp / "counts.db")
            up = Uploader(store, cfg, clock=ManualClock(T0 + days * 86400 + 3600))
            t = time.perf_counter()
            outcome = up.cycle()
            took = time.perf_counter() - t
            left = up.backlog()["periods"]
            store.close()
        summary = rx.summary(str(tmp / "rx.db"))
    assert outcome is None and left == 0, (outcome, left)
    assert summary["periods"] == days * 24 * 2, summary["periods"]
    return took, summary["requests"], summary["periods"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    results = [run_once(args.days) for _ in range(args.runs)]
    secs = [r[0] for r in results]
    print(f"backlog drain: {args.days} days x 2 sensors = {results[0][2]} hourly totals, "
          f"batch_max 200, reference receiver on 127.0.0.1")
    print(f"  requests: {results[0][1]} (target <= 25)")
    print(f"  seconds:  median {statistics.median(secs):.2f}, min {min(secs):.2f}, "
          f"max {max(secs):.2f} over {args.runs} runs (target < 5)")


if __name__ == "__main__":
    main()
