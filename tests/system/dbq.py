"""Read the counter's database inside the test root: ``dbq.py PATH`` prints one JSON line.

Run by tests/system/run.sh with the installed venv's Python.  Read-only (``mode=ro``), so
it never creates files in the state directory or holds the daemon up.
"""

import json
import sqlite3
import sys

db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
total = db.execute("SELECT COALESCE(SUM(in_count + out_count), 0) FROM counts").fetchone()[0]
events = db.execute("SELECT COALESCE(SUM(count), 0), MAX(ts) FROM events").fetchone()
run = db.execute("SELECT started_at, stopped_at, stop_reason FROM runs ORDER BY id DESC LIMIT 1").fetchone()
print(json.dumps({
    "total": total,
    "event_total": events[0],
    "last_event": events[1],
    "run_started": run[0] if run else None,
    "run_stopped": run[1] if run else None,
    "stop_reason": run[2] if run else None,
}))
