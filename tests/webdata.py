"""A year of counts for the dashboard's tests and benchmark: 4 sensors, 15-minute buckets
in opening hours, one daemon run over the whole time, a few journal entries."""

from __future__ import annotations

import random
from pathlib import Path

from kiosk.store import Store
from kiosk.store.journal import JournalEntry

SENSORS = ("door-east", "door-north", "door-south", "door-west")


def year_db(path: Path, now: float, *, days: int = 366, sensors: tuple[str, ...] = SENSORS,
            seed: int = 1, stopped: bool = True, all_day: bool = False) -> Path:
    """A database counted from ``days`` days before ``now`` until ``now``: buckets of
    8:00-20:00 local (UTC+2) with visits (``all_day``: every bucket of the day, the worst
    case for the SQL), one run over the whole time (ended at ``now`` if ``stopped``)."""
    rnd = random.Random(seed)
    store = Store.open(path)
    start = int(now - days * 86400) // 900 * 900
    rows = []
    t = start
    while t < now - 900:
        hour = (t // 3600 + 2) % 24
        if all_day or 8 <= hour < 20:
            for sid in sensors:
                rows.append((sid, t, rnd.randint(5, 60), rnd.randint(5, 60), float(t + 900)))
        t += 900
    with store.write() as conn:
        conn.executemany("INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                         " VALUES (?, ?, ?, ?, ?)", rows)
        for sid in sensors:
            conn.execute("INSERT INTO sensors (sensor_id, kind, state, state_since, last_pulse,"
                         " message, updated_at) VALUES (?, 'gpio', 'ok', ?, ?, NULL, ?)",
                         (sid, start, now - 60, now))
    run = store.start_run(now=start, pid=1, version="bench")
    if stopped:
        store.end_run(run, now=now, reason="SIGTERM")
    store.add_journal(*[JournalEntry(now - k * 3600, ("INFO", "WARNING", "ERROR")[k % 3],
                                     ("state", "upload", "daemon-start")[k % 3],
                                     f"entry {k}", SENSORS[k % 4] if k % 2 else None)
                        for k in range(200)])
    store.close()
    return path
