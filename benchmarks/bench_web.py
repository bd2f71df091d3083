#!/usr/bin/env python3
"""Benchmark ``kiosk web`` on a year of data for 4 sensors: answer times and memory.

Builds a temporary database with every 15-minute bucket of 366 days filled for 4 sensors
(140,000+ rows, one run over the year, 200 journal entries), starts ``kiosk web`` as a
subprocess on 127.0.0.1, and times requests over one keep-alive connection (as a browser
on the Now page makes them): the Now page, its live part (fetched every 3 s by the
page), and the other pages.  Then it reads the server's resident memory (VmRSS, and the
peak VmHWM) from /proc.

    .venv/bin/python benchmarks/bench_web.py [--repeat 40] [--json]

Targets (issue 12): the Now page answers in under 50 ms (median), the process stays under
60 MB RSS.  The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.webdata import year_db  # noqa: E402
from tests.webserver import WebServer, web_config  # noqa: E402

NOW_TARGET_MS = 50.0
RSS_TARGET_MB = 60.0
PAGES = ("/", "/now/live", "/report/day", "/report/week", "/report/month", "/report/year",
         "/journal", "/annotations")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def time_page(conn: http.client.HTTPConnection, path: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        out.append((time.perf_counter() - t0) * 1000)
        if r.status != 200 or not body:
            raise SystemExit(f"{path}: status {r.status}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=40, help="requests per page (default 40)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        db = year_db(d / "counts.db", time.time(), days=366, all_day=True)
        import sqlite3

        rows = sqlite3.connect(db).execute("SELECT count(*) FROM counts").fetchone()[0]
        built = time.perf_counter() - t0
        server = WebServer(web_config(d, db, web="public_read = true\n"), d)
        try:
            rss_idle = rss_mb(server.proc.pid)[0]
            host, port = server.url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            results = {}
            for path in PAGES:
                time_page(conn, path, 3)  # warm up (templates compiled, page cache)
                ms = time_page(conn, path, args.repeat if path in ("/", "/now/live") else
                               max(5, args.repeat // 4))
                results[path] = {"median_ms": round(statistics.median(ms), 1),
                                 "p90_ms": round(sorted(ms)[int(len(ms) * 0.9) - 1], 1),
                                 "max_ms": round(max(ms), 1), "n": len(ms)}
            rss, hwm = rss_mb(server.proc.pid)
            conn.close()
        finally:
            server.close()
    now_ms = results["/"]["median_ms"]
    out = {"rows": rows, "database_built_s": round(built, 1), "pages": results,
           "rss_idle_mb": round(rss_idle, 1), "rss_mb": round(rss, 1), "rss_peak_mb": round(hwm, 1),
           "now_target_ms": NOW_TARGET_MS, "rss_target_mb": RSS_TARGET_MB,
           "now_ok": now_ms < NOW_TARGET_MS, "rss_ok": hwm < RSS_TARGET_MB}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"database: {rows:,} bucket rows (4 sensors, 366 days), built in {built:.1f} s")
        print(f"{'page':<16}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}{'n':>5}")
        for path, r in results.items():
            print(f"{path:<16}{r['median_ms']:>10}{r['p90_ms']:>9}{r['max_ms']:>9}{r['n']:>5}")
        print(f"Now page median {now_ms} ms (target < {NOW_TARGET_MS:g} ms): "
              f"{'OK' if out['now_ok'] else 'MISSED'}")
        print(f"RSS {rss_idle:.1f} MB at start, {rss:.1f} MB after, peak {hwm:.1f} MB "
              f"(target < {RSS_TARGET_MB:g} MB): {'OK' if out['rss_ok'] else 'MISSED'}")
    return 0 if out["now_ok"] and out["rss_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
