"""``kiosk import`` of an old counter's history: peak memory and time.

The field case: years of 15-minute rows of 4 sensors from the old counter
(350,400 rows: 2.5 years; 701,568 rows: 5 years) imported into a fresh database with
``kiosk import FILE --db counts.db``.  Each run is a new process, measured from a tiny
wrapper process (``os.wait4``): its peak resident set (``ru_maxrss``) and wall time.  The
wrapper, not this script, forks ``kiosk``, because a child's ``ru_maxrss`` also counts the
pages of the process it was forked from.

    .venv/bin/python benchmarks/bench_import.py [--rows 350400 701568] [--runs 3]
    .venv/bin/python benchmarks/bench_import.py --src /tmp/old/   # the kiosk/ of another version

Prints, per file size, the median over ``--runs`` of peak RSS (MB) and wall seconds
(target: under 120 MB whatever the size); every run checks the rows arrived.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
SENSORS = ("main-entrance", "east-gate", "library-door", "garage")
END = 1_700_000_100 // 900 * 900  # 2023-11-14: every row has ended

# Runs the command given in argv, waits with os.wait4 and prints its rusage as JSON.
WRAPPER = """
import json, os, sys, time
t = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_pid, status, ru = os.wait4(pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": ru.ru_maxrss,
                  "wall_s": time.monotonic() - t, "cpu_s": ru.ru_utime + ru.ru_stime}))
"""


def write_csv(path: Path, rows: int) -> int:
    """An old counter's export: ``rows`` 15-minute rows shared by 4 sensors, ending at END."""
    per = rows // len(SENSORS)
    start = END - per * 900
    n = 0
    with path.open("w") as f:
        f.write("sensor_id,start,end,in,out\n")
        for sid in SENSORS:
            for t in range(start, END, 900):
                a = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
                b = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 900))
                v = (t // 900) % 37
                f.write(f"{sid},{a},{b},{v},{max(0, v - 2)}\n")
                n += 1
    return n


# Runs ``kiosk`` from the directory in argv[1] (an editable install's finder, which comes
# before PYTHONPATH, is taken out of the way).
FROM_SRC = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv.pop(1))
import kiosk
assert kiosk.__file__.startswith(sys.path[0]), kiosk.__file__
runpy.run_module("kiosk", run_name="__main__", alter_sys=True)
"""


def run_once(csv: Path, db: Path, src: str | None) -> dict[str, float]:
    db.unlink(missing_ok=True)
    kiosk = [PY, "-c", FROM_SRC, str(Path(src).resolve())] if src else [PY, "-m", "kiosk"]
    out = subprocess.run([PY, "-c", WRAPPER, *kiosk, "import", str(csv), "--db", str(db)],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    if m["rc"] != 0:
        raise SystemExit(f"kiosk import failed: {out.stdout}{out.stderr}")
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[350_400, 701_568])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--src", help="run the kiosk package found in this directory (another version)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for rows in a.rows:
            csv = tmp / f"history-{rows}.csv"
            n = write_csv(csv, rows)
            size = csv.stat().st_size
            ms = []
            for _ in range(a.runs):
                m = run_once(csv, tmp / "counts.db", a.src)
                with sqlite3.connect(tmp / "counts.db") as conn:
                    got = conn.execute("SELECT count(*) FROM counts").fetchone()[0]
                if got != n:
                    raise SystemExit(f"expected {n} rows in the database, found {got}")
                ms.append(m)
            rss = statistics.median(m["maxrss_kb"] for m in ms) / 1024
            wall = statistics.median(m["wall_s"] for m in ms)
            cpu = statistics.median(m["cpu_s"] for m in ms)
            print(f"{n:>9,} rows ({size / 1e6:.0f} MB): peak RSS {rss:6.1f} MB, "
                  f"{wall:5.1f} s wall, {cpu:5.1f} s CPU (median of {a.runs})", flush=True)


if __name__ == "__main__":
    main()
