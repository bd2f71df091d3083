"""Sync that scales: the scan's batched pieces give what the per-period definitions give,
the scan's queries do not grow with the backlog, and ``kiosk sync`` of an imported backlog
delivers every total once, with progress on a terminal and quiet in a pipe."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kiosk import config
from kiosk.annotations import FlagIndex, flags_for
from kiosk.clock import ManualClock
from kiosk.importer import uploadable
from kiosk.periods import Total
from kiosk.store import Store
from kiosk.store.outbox import MergeTotal, merge_totals
from kiosk.store.staff import insert_annotation, insert_import, insert_imported_rows
from kiosk.upload import Uploader
from tests.conftest import wait_for

T0 = 1_780_000_000 // 86400 * 86400  # a UTC midnight in 2026
SENSORS = ("a", "b", "c")


def uploadable_by_definition(store: Store, totals: list[Total]) -> list[Total]:
    """The per-total definition (what kiosk.importer.uploadable did before it bisected)."""
    rows = store.imported_counts(min(t.start for t in totals), max(t.end for t in totals))
    if rows is None:
        return totals
    out = []
    for t in totals:
        mine = [(i, o, up) for s, a, i, o, up in rows if s == t.sensor_id and t.start <= a < t.end]
        if not mine:
            out.append(t)
            continue
        i = t.in_count - sum(b[0] for b in mine if not b[2])
        o = t.out_count - sum(b[1] for b in mine if not b[2])
        cov = t.coverage
        if cov <= 0:
            if any(b[2] for b in mine):
                cov = 1.0
            elif i == 0 and o == 0:
                continue
        out.append(replace(t, in_count=i, out_count=o, coverage=cov))
    return out


@pytest.fixture
def history(tmp_path) -> Store:
    """Counts of three sensors over 10 days: some counted here, some imported for upload,
    some imported for local use only, with annotations (one deleted) on top."""
    rng = random.Random(9)
    store = Store.open(tmp_path / "counts.db")
    with store.write() as conn:
        for upload in (True, False):
            iid = insert_import(conn, file=f"old-{upload}.csv", sha256=f"{upload}", now=T0,
                                rows=0, upload=upload, first_start=T0, last_end=T0 + 10 * 86400,
                                sensors=SENSORS, replaced=0)
            rows = [(s, t, t + rng.choice((900, 3600)), rng.randrange(50), rng.randrange(50))
                    for s in SENSORS for t in range(T0, T0 + 10 * 86400, 900)
                    if rng.random() < 0.15]
            taken = {(r[0], r[1]) for r in conn.execute("SELECT sensor_id, start FROM counts")}
            insert_imported_rows(conn, iid, T0, [r for r in rows if (r[0], r[1]) not in taken])
        taken = {(r[0], r[1]) for r in conn.execute("SELECT sensor_id, start FROM counts")}
        conn.executemany(
            "INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at) VALUES"
            " (?, ?, ?, ?, ?)", [(s, t, rng.randrange(9), rng.randrange(9), T0)
                                 for s in SENSORS for t in range(T0, T0 + 10 * 86400, 900)
                                 if rng.random() < 0.3 and (s, t) not in taken])
        for k in range(12):
            a = T0 + rng.randrange(0, 10 * 86400, 900)
            aid = insert_annotation(conn, start=a, end=a + rng.choice((900, 7200, 86400 * 3)),
                                    sensor_id=rng.choice((None, *SENSORS)),
                                    kind=rng.choice(("closed", "estimate", "sensor-fault")),
                                    note=f"note {k}", now=T0)
            if k == 3:
                conn.execute("UPDATE annotations SET deleted_at = ? WHERE id = ?", (T0, aid))
    yield store
    store.close()


def periods(length: int, rng: random.Random) -> list[Total]:
    return [Total(s, t, t + length, rng.randrange(200), rng.randrange(200),
                  rng.choice((0.0, 0.5, 1.0)))
            for s in SENSORS for t in range(T0 - 86400, T0 + 11 * 86400, length)]


@pytest.mark.parametrize("length", [900, 1800, 3600])
def test_uploadable_gives_what_the_per_total_definition_gives(history, length):
    totals = periods(length, random.Random(length))
    assert uploadable(history, totals) == uploadable_by_definition(history, totals)


@pytest.mark.parametrize("for_upload", [True, False])
def test_flag_index_gives_what_flags_for_gives(history, for_upload):
    index = FlagIndex(history, T0 - 86400, T0 + 11 * 86400, for_upload=for_upload)
    seen = set()
    for t in periods(3600, random.Random(1)) + periods(900, random.Random(2)):
        expected = flags_for(history, t.sensor_id, t.start, t.end, for_upload=for_upload)
        assert index.flags(t.sensor_id, t.start, t.end) == expected, t
        seen.update(expected)
    assert seen == {"closed", "estimate", "sensor-fault", "imported"}  # the test covers them


def outbox(store: Store) -> dict[tuple[str, int], tuple]:
    return {(r[0], r[1]): r[2:] for r in store.conn.execute(
        "SELECT sensor_id, start, in_count, out_count, coverage, revision, state, attempted,"
        " flags FROM uploads")}


def test_merge_totals_bumps_a_revision_only_where_it_may_have_reached_the_server(tmp_path):
    store = Store.open(tmp_path / "counts.db")
    found = [MergeTotal(s, T0 + k * 3600, T0 + (k + 1) * 3600, k, k, 1.0, None)
             for s in ("a", "b") for k in range(4)]
    with store.write() as conn:
        assert merge_totals(conn, found) == 8
        conn.execute("UPDATE uploads SET state = 'sent' WHERE start = ?", (T0,))
        conn.execute("UPDATE uploads SET attempted = 1 WHERE start = ?", (T0 + 3600,))
        conn.execute("UPDATE uploads SET state = 'quarantined' WHERE start = ?", (T0 + 7200,))
    changed = [t._replace(in_count=t.in_count + 1) for t in found if t.sensor_id == "a"]
    again = [t for t in found if t.sensor_id == "b"]
    flagged = [found[3]._replace(flags='["imported"]')]
    with store.write() as conn:  # a total found twice counts once, as last found
        assert merge_totals(conn, again + changed + flagged) == 4
    held = outbox(store)
    assert held[("a", T0)][3:5] == (2, "pending")  # was sent: a new revision, pending again
    assert held[("a", T0 + 3600)][3:6] == (2, "pending", 0)  # was in a request
    assert held[("a", T0 + 7200)][3:5] == (1, "quarantined")  # stays set aside
    assert held[("a", T0 + 10800)][:4] == (3, 3, 1.0, 1)  # pending, never sent: in place
    assert held[("a", T0 + 10800)][6] == '["imported"]'
    assert {held[("b", T0 + k * 3600)][3] for k in range(4)} == {1}  # unchanged
    store.close()


def test_backlog_counts_follow_this_connections_writes_and_others(tmp_path):
    db = tmp_path / "counts.db"
    store, other = Store.open(db), Store.open(db)

    def by_scan(s: Store) -> tuple:
        return s._counted_backlog()

    with store.write() as conn:
        merge_totals(conn, [MergeTotal("a", T0 + k * 900, T0 + (k + 1) * 900, 1, 1, 1.0, None)
                            for k in range(50)])
    assert store.backlog() == by_scan(store) == (50, T0, 0, 0)
    store.mark_sent(0, [("a", T0 + k * 900, 1) for k in range(10)], now=T0)  # own writes
    store.quarantine("a", T0 + 10 * 900, 1, "refused")
    assert store.backlog() == by_scan(store) == (39, T0 + 11 * 900, 1, 10)
    with other.write() as conn:  # another connection (the daemon, or kiosk sync)
        conn.execute("UPDATE uploads SET state = 'sent' WHERE start < ?", (T0 + 20 * 900,))
        conn.execute("DELETE FROM uploads WHERE start >= ?", (T0 + 45 * 900,))
    assert store.backlog() == by_scan(store) == (25, T0 + 20 * 900, 0, 20)
    with store.write() as conn:  # inside a transaction: counted as it is
        conn.execute("UPDATE uploads SET state = 'pending'")
        assert store.backlog() == (45, T0, 0, 0)
    assert store.backlog() == by_scan(store) == (45, T0, 0, 0)
    other.close()
    store.close()
    with Store.open_reader(db) as reader:  # read-only (kiosk status): no temporary triggers
        assert reader.backlog() == (45, T0, 0, 0)


def bench_config(tmp_path: Path, url: str, db: Path) -> Path:
    token = tmp_path / "token"
    token.write_text("scale-token")
    os.chmod(token, 0o600)
    path = tmp_path / "kiosk.toml"
    path.write_text(
        f'[device]\nid = "scale-01"\nsite = "s"\ntimezone = "Europe/Helsinki"\n'
        f'[storage]\npath = "{db}"\n'
        + "".join(f'[[sensors]]\nid = "{s}"\ntype = "gpio"\npin = {17 + k}\n'
                  for k, s in enumerate(SENSORS))
        + f'[upload]\nurl = "{url}"\ntoken_file = "{token}"\nperiod_minutes = 15\n')
    return path


def import_csv(path: Path, *, start: int, days: int) -> dict[tuple[str, str], tuple[int, int]]:
    """A 15-minute export of ``days`` days from ``start``; returns (sensor, start) -> (in, out)."""
    rows = {}
    with path.open("w") as f:
        f.write("sensor_id,start,end,in,out\n")
        for s in SENSORS:
            for t in range(start, start + days * 86400, 900):
                a, b = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(x)) for x in (t, t + 900))
                rows[(s, a)] = (t // 900 % 17, t // 900 % 5)
                f.write(f"{s},{a},{b},{rows[(s, a)][0]},{rows[(s, a)][1]}\n")
    return rows


def kiosk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kiosk", *args], capture_output=True, text=True,
                          timeout=120)


def test_the_scan_of_an_imported_backlog_runs_a_few_queries_per_week(tmp_path):
    """Not a timing: the statements the scan runs (SQLite's trace, each executemany row
    counted).  The per-period scan ran several per period and total, a DISTINCT over all
    counts among them."""
    db = tmp_path / "counts.db"
    now = T0 + 60 * 86400
    cfg_path = bench_config(tmp_path, "http://127.0.0.1:9/api/v1/visitor-counts", db)
    with Store.open(db) as store, store.write() as conn:  # a counted day, scanned
        conn.executemany("INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                         " VALUES (?, ?, 1, 1, ?)",
                         [(s, t, now - 86400) for s in SENSORS
                          for t in range(now - 86400, now, 900)])
        conn.execute("INSERT INTO runs (started_at, last_seen, stopped_at) VALUES (?, ?, ?)",
                      (now - 86400, now - 60, now - 60))
    cfg = config.load(str(cfg_path))
    store = Store.open(db)
    up = Uploader(store, cfg, clock=ManualClock(now))
    counted = up.scan(now)
    assert counted == 95 * len(SENSORS)  # the counted day's closed quarter hours
    import_csv(tmp_path / "h.csv", start=now - 57 * 86400, days=56)
    r = kiosk("import", str(tmp_path / "h.csv"), "--upload", "--config", str(cfg_path))
    assert r.returncode == 0, r.stderr
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    assert up.scan(now + 1) == 56 * 96 * len(SENSORS)  # 16,128 late totals queued
    store.conn.set_trace_callback(None)
    writes = [q for q in statements if q.startswith(("INSERT INTO uploads", "UPDATE uploads"))]
    others = [q for q in statements if q not in writes]
    assert len(writes) == 56 * 96 * len(SENSORS)  # one row written per total (executemany)
    assert len(others) < 250, len(others)  # and the reads: a few per week-long window
    assert store.backlog().pending == counted + 56 * 96 * len(SENSORS)
    store.close()


def read_pty(fd: int, proc: subprocess.Popen) -> str:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out.decode()


def test_kiosk_sync_of_an_imported_backlog_delivers_every_total_once(tmp_path):
    rx_db = tmp_path / "rx.db"
    token = tmp_path / "token"
    token.write_text("scale-token")
    rx_out = tmp_path / "rx.out"
    rx = subprocess.Popen([sys.executable, "-m", "kiosk", "receiver", "--port", "0", "--db",
                           str(rx_db), "--token-file", str(token)],
                          stdout=rx_out.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "\n" in rx_out.read_text(), timeout=20, what="the receiver")
        url = rx_out.read_text().split()[2]
        db = tmp_path / "counts.db"
        cfg = bench_config(tmp_path, url, db)
        start = int(time.time()) // 86400 * 86400 - 30 * 86400
        rows = import_csv(tmp_path / "h.csv", start=start, days=14)
        r = kiosk("import", str(tmp_path / "h.csv"), "--upload", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        # on a terminal: a progress line, redrawn in place, then what was sent
        leader, follower = os.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "kiosk", "sync", "--config", str(cfg)],
                                stdin=subprocess.DEVNULL, stdout=follower,
                                stderr=subprocess.PIPE)
        os.close(follower)
        shown = read_pty(leader, proc)
        os.close(leader)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        n = len(rows)
        assert "\rpreparing: " in shown and " periods (" in shown
        assert "\rsending: " in shown and f"{n:,} of {n:,} totals sent (100%)" in shown
        assert f"sent {n:,} period(s) from " in shown and "nothing left to send" in shown
        with sqlite3.connect(rx_db) as conn:
            held = {(s, a): (i, o, c, rev, json.loads(f)) for s, a, i, o, c, rev, f in
                    conn.execute('SELECT sensor_id, start, in_count, out_count, coverage,'
                                 ' revision, flags FROM totals')}
        assert held == {k: (i, o, 1.0, 1, ["imported"]) for k, (i, o) in rows.items()}
        # in a pipe: no progress line; nothing new to send, and it says so
        r = kiosk("sync", "--config", str(cfg))
        assert r.returncode == 0 and r.stdout == "sent nothing; nothing left to send (0 quarantined)\n"
        assert "\r" not in r.stdout + r.stderr
    finally:
        rx.send_signal(signal.SIGTERM)
        rx.wait(30)


def test_kiosk_import_of_a_large_file_streams_with_a_progress_line(tmp_path):
    """A file of several read chunks (1 MiB): every row arrives; on a terminal a progress
    line of the bytes read, in a pipe none."""
    db = tmp_path / "counts.db"
    start = int(time.time()) // 86400 * 86400 - 200 * 86400
    rows = import_csv(tmp_path / "h.csv", start=start, days=120)  # 34,560 rows, 1.5 MB
    assert (tmp_path / "h.csv").stat().st_size > 1 << 20
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kiosk", "import", str(tmp_path / "h.csv"),
                             "--db", str(db)], stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.PIPE)
    os.close(follower)
    shown = read_pty(leader, proc)
    os.close(leader)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    assert "\rreading: " in shown and " MB (100%)" in shown
    assert f"imported {len(rows)} row(s) from h.csv (import #1): a, b, c" in shown
    with sqlite3.connect(db) as conn:
        held = {(s, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a))): (i, o)
                for s, a, i, o in conn.execute(
                    "SELECT sensor_id, start, in_count, out_count FROM counts"
                    " WHERE import_id = 1")}
        assert conn.execute("SELECT count(*) FROM import_rows").fetchone()[0] == len(rows)
    assert held == rows
    # the same rows with other line endings, in a pipe: nothing new, no progress line
    (tmp_path / "crlf.csv").write_bytes((tmp_path / "h.csv").read_bytes().replace(b"\n", b"\r\n"))
    r = kiosk("import", str(tmp_path / "crlf.csv"), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"crlf.csv: nothing to import: all {len(rows)} row(s) are already there\n"
    assert "\r" not in r.stdout + r.stderr


def test_kiosk_import_killed_while_reading_leaves_the_database_as_it_was(tmp_path):
    """kill -9 in the middle of the file: the rows read so far were only in the temp file
    (gone with the process); nothing is in the database and the import can simply be run
    again."""
    db = tmp_path / "counts.db"
    start = int(time.time()) // 86400 * 86400 - 1200 * 86400
    rows = import_csv(tmp_path / "h.csv", start=start, days=1000)  # 288,000 rows, 13 MB
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kiosk", "import", str(tmp_path / "h.csv"),
                             "--db", str(db)], stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"reading: " not in seen and time.monotonic() < deadline:
        if select.select([leader], [], [], 0.2)[0]:
            seen += os.read(leader, 4096)
    proc.kill()
    proc.wait(30)
    os.close(leader)
    assert b"reading: " in seen and b"(100%)" not in seen, seen
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM counts").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM imports").fetchone()[0] == 0
    r = kiosk("import", str(tmp_path / "h.csv"), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"imported {len(rows)} row(s) from h.csv (import #1)")
