"""Benchmark ``kiosk report year``: a year of 15-minute buckets for 4 sensors.

Builds a temporary database (35,040 buckets x 4 sensors = 140,160 rows, plus one run
covering the year), then times the year report 5 times: build_report, render_table and
render_html each, and the three together.  Target: under 1 second per report.

    .venv/bin/python benchmarks/bench_report.py [--years 2] [--repeat 5]

``--years 2`` also fills the previous year, so the comparison reads a full year too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

from kiosk.periods import local_midnight
from kiosk.report.compute import build_report
from kiosk.report.html import render_html
from kiosk.report.text import render_table
from kiosk.store import BUCKET_S, Store

TZ = ZoneInfo("Europe/Helsinki")
SENSORS = ("entrance-1", "entrance-2", "entrance-3", "garage")
YEAR = 2025


def fill(path: Path, years: int) -> int:
    rng = random.Random(1)
    store = Store.open(path)
    lo = local_midnight(date(YEAR - years + 1, 1, 1), TZ)
    hi = local_midnight(date(YEAR + 1, 1, 1), TZ)
    rows = [(sid, t, rng.randint(0, 40), rng.randint(0, 40)) for sid in SENSORS
            for t in range(lo, hi, BUCKET_S)]
    with store.write() as conn:
        conn.executemany("INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                         " VALUES (?, ?, ?, ?, 0)", rows)
        conn.execute("INSERT INTO runs (started_at, last_seen, stopped_at) VALUES (?, ?, ?)",
                     (lo, hi, hi))
    store.close()
    return len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--years", type=int, default=1, help="years of buckets (default 1)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "counts.db"
        t0 = time.perf_counter()
        n = fill(path, args.years)
        print(f"database: {n:,} count rows ({len(SENSORS)} sensors, {args.years} year(s)) "
              f"built in {time.perf_counter() - t0:.1f} s")
        times: dict[str, list[float]] = {"build": [], "table": [], "html": [], "total": []}
        for _ in range(args.repeat):
            with Store.open_reader(path) as store:  # a fresh connection, as the CLI has
                t0 = time.perf_counter()
                r = build_report(store, span="year", date=date(YEAR, 6, 1), tz=TZ,
                                 now=local_midnight(date(YEAR + 1, 2, 1), TZ))
                t1 = time.perf_counter()
                render_table(r)
                t2 = time.perf_counter()
                render_html(r)
                t3 = time.perf_counter()
            for k, v in (("build", t1 - t0), ("table", t2 - t1), ("html", t3 - t2), ("total", t3 - t0)):
                times[k].append(v)
        print(f"year {YEAR}: {r['totals']['visits']:,} visits, {len(r['rows'])} rows; "
              f"{args.repeat} runs")
        for k, v in times.items():
            print(f"  {k:6s} median {statistics.median(v) * 1000:7.1f} ms   "
                  f"min {min(v) * 1000:7.1f} ms   max {max(v) * 1000:7.1f} ms")
        ok = statistics.median(times["total"]) < 1.0
        print("target < 1 s: " + ("met" if ok else "MISSED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
