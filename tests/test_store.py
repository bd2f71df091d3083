"""Store, writer and periods on real SQLite files."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from kiosk.clock import ManualClock
from kiosk.events import ChannelState, Pulse, Rejected, SensorEvent, TotalsState
from kiosk.exc import ExportError, StorageError
from kiosk.periods import coverage, iso_local, parse_time, period_bounds, totals
from kiosk.store import Store, bucket_start
from kiosk.writer import REJECT_LOG_INTERVAL_S, Writer

HEL = ZoneInfo("Europe/Helsinki")
T0 = datetime(2026, 11, 23, 7, 0, tzinfo=ZoneInfo("UTC")).timestamp()  # Mon 09:00 in Helsinki


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "counts.db")
    yield s
    s.close()


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
def writer(store, clock):
    w = Writer(store, clock=clock, sensor_kinds={"a": "gpio", "b": "serial"})
    w.run_id = store.start_run(now=clock.now(), pid=1, version="t")
    return w


def test_open_sets_wal_and_full_sync(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.integrity_check() == "ok"


def test_migrations_are_idempotent(tmp_path):
    Store.open(tmp_path / "c.db").close()
    s = Store.open(tmp_path / "c.db")
    names = [r[0] for r in s.conn.execute("SELECT name FROM _sqlite_migrations")]
    assert names == ["m001_initial", "m002_uploads", "m003_staff", "m004_fewer_indexes",
                     "m005_serial_totals", "m006_unplaced_pulses", "m007_feedback"]
    s.close()


def test_reader_tells_a_database_that_needs_migrating(tmp_path, caplog):
    """open_reader never migrates; it names what `kiosk run` would still apply."""
    Store.open(tmp_path / "c.db").close()
    with Store.open_reader(tmp_path / "c.db") as r:
        assert r.pending_migrations == []
    conn = sqlite3.connect(tmp_path / "c.db")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name IN ('m003_staff', 'm004_fewer_indexes')")
    conn.commit()
    conn.close()
    with caplog.at_level("WARNING", logger="kiosk.store"), Store.open_reader(tmp_path / "c.db") as r:
        assert r.pending_migrations == ["m003_staff", "m004_fewer_indexes"]
    assert "`kiosk run` migrates it" in caplog.text


def test_cli_import_does_not_load_sqlite_utils():
    import subprocess
    import sys

    code = "import sys, kiosk.cli; print('sqlite_utils' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_upsert_adds_not_overwrites(writer, store, clock):
    for _ in range(3):
        writer.handle(Pulse("a", T0 + 10, "in"))
    writer.handle(Pulse("a", T0 + 20, "out", 4))
    assert writer.flush()
    writer.handle(Pulse("a", T0 + 30, "in", 2))
    assert writer.flush(events=True)
    assert store.buckets(T0, T0 + 900) == [("a", int(T0), 5, 4)]
    assert store.conn.execute("SELECT count(*), sum(count) FROM events").fetchone() == (3 + 1 + 1, 9)


def test_buckets_are_15_minutes_utc(writer, store):
    for ts in (T0, T0 + 899, T0 + 900, T0 + 3599.9, T0 + 3600):
        writer.handle(Pulse("a", ts, "in"))
    writer.flush()
    rows = store.buckets(T0, T0 + 7200)
    assert [(r[1] - T0, r[2]) for r in rows] == [(0, 2), (900, 1), (2700, 1), (3600, 1)]
    assert bucket_start(T0 + 899) == T0


def test_reader_cannot_write_and_does_not_create(tmp_path, store):
    with pytest.raises(StorageError, match="no database yet"):
        Store.open_reader(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    r = Store.open_reader(store.path)
    with pytest.raises(sqlite3.OperationalError):
        r.conn.execute("DELETE FROM counts")
    r.close()


def test_not_a_database(tmp_path):
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"damaged|not a database"):
        Store.open(p)


def test_failed_flush_keeps_counts_in_memory(writer, store, tmp_path):
    writer.handle(Pulse("a", T0, "in", 5))
    blocker = sqlite3.connect(store.path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    store.conn.execute("PRAGMA busy_timeout = 50")
    assert writer.flush() is False
    assert "locked" in writer.stats.last_error
    assert writer.pending_visitors() == {"a": [5, 0]}
    blocker.rollback()
    blocker.close()
    writer.handle(Pulse("a", T0, "in", 1))
    assert writer.flush() is True
    assert store.totals_between(T0, T0 + 900) == {"a": (6, 0)}
    assert writer.stats.last_error is None


def test_disk_full_keeps_counts(tmp_path, clock):
    """A database that cannot grow (max_page_count) behaves like a full disk."""
    s = Store.open(tmp_path / "full.db")
    w = Writer(s, clock=clock, sensor_kinds={"a": "gpio"})
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    for i in range(5000):
        w.handle(Pulse("a", T0 + i * 60, "in"))
    assert w.flush(events=True) is False
    assert "disk is full" in w.stats.last_error
    assert sum(v[0] for v in w.pending_visitors().values()) == 5000
    assert w.events_pending == 5000
    s.conn.execute("PRAGMA max_page_count = 1000000")
    assert w.flush(events=True) is True
    assert sum(v[0] for v in s.totals_between(0, 2e10).values()) == 5000
    assert s.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5000
    s.close()


def test_sensor_state_and_journal(writer, store, clock):
    writer.handle(SensorEvent("b", T0 + 1, "state", "/dev/ttyUSB0: gone", "ERROR", "down"))
    writer.handle(Pulse("a", T0 + 2, "in"))
    writer.flush()
    rows = {r["sensor_id"]: r for r in store.sensor_rows()}
    assert rows["b"]["state"] == "down" and rows["b"]["message"] == "/dev/ttyUSB0: gone"
    assert rows["a"]["last_pulse"] == T0 + 2
    j = store.journal()
    assert [(e["level"], e["kind"], e["sensor_id"]) for e in j] == [("ERROR", "state", "b")]


def test_rejected_lines_are_counted_and_logging_is_rate_limited(writer, store, clock):
    for i in range(100):
        writer.handle(Rejected("b", T0 + i * 0.1, "G@RBAGE", "does not parse"))
    writer.handle(Rejected("b", T0 + REJECT_LOG_INTERVAL_S + 1, "X", "does not parse"))
    writer.flush()
    rows = {r["sensor_id"]: r for r in store.sensor_rows()}
    assert rows["b"]["rejected_lines"] == 101
    lines = [e for e in store.journal() if e["kind"] == "rejected-line"]
    assert len(lines) == 2
    assert "'G@RBAGE'" in lines[0]["message"]
    assert "100 rejected since the last report" in lines[1]["message"]


def test_history_survives_restart(writer, store, clock):
    writer.handle(Pulse("a", T0 + 5, "in"))
    writer.handle(Rejected("b", T0, "x", "bad"))
    writer.flush()
    w2 = Writer(store, clock=clock, sensor_kinds={"a": "gpio", "b": "serial"})
    w2.load_sensor_history()
    w2.flush()
    rows = {r["sensor_id"]: r for r in store.sensor_rows()}
    assert rows["a"]["last_pulse"] == T0 + 5 and rows["b"]["rejected_lines"] == 1


def test_prune_keeps_counts(writer, store, clock):
    writer.handle(Pulse("a", T0, "in"))
    writer.flush(events=True)
    n = store.prune(now=T0 + 31 * 86400, event_retention_days=30, journal_retention_days=365)
    assert n == 1
    assert store.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert store.totals_between(T0, T0 + 900) == {"a": (1, 0)}


# -- periods ---------------------------------------------------------------------------------

def test_coverage():
    assert coverage([(0, 3600)], 0, 3600) == 1.0
    assert coverage([(0, 900), (1800, 2700)], 0, 3600) == 0.5
    assert coverage([(0, 2000), (1000, 2500)], 0, 3600) == pytest.approx(2500 / 3600)
    assert coverage([(5000, 6000)], 0, 3600) == 0.0


def test_dst_days_have_23_and_25_hours():
    spring = parse_time("2026-03-29", HEL, now=T0)
    autumn = parse_time("2026-10-25", HEL, now=T0)
    (d1,) = period_bounds(spring, spring + 1, "1d", HEL)
    (d2,) = period_bounds(autumn, autumn + 1, "1d", HEL)
    assert d1[1] - d1[0] == 23 * 3600
    assert d2[1] - d2[0] == 25 * 3600
    hours = period_bounds(*d2, "1h", HEL)
    labels = [iso_local(s, HEL)[11:] for s, _e in hours]
    assert len(hours) == 25
    assert "03:00:00+03:00" in labels and "03:00:00+02:00" in labels
    assert len(period_bounds(*d1, "1h", HEL)) == 23


def test_totals_include_zero_periods_when_running_only(writer, store, clock):
    # ran 09:00-11:00 local, then off, then 12:00-12:30
    writer.handle(Pulse("a", T0 + 100, "in", 3))
    writer.flush()
    store.end_run(writer.run_id, now=T0 + 7200, reason="SIGTERM")
    rid = store.start_run(now=T0 + 3 * 3600, pid=2, version="t")
    store.end_run(rid, now=T0 + 3 * 3600 + 1800, reason="SIGTERM")
    rows = totals(store, T0, T0 + 4 * 3600, "1h", HEL, ["a"])
    assert [(r.start - T0, r.in_count, r.coverage) for r in rows] == [
        (0, 3, 1.0), (3600, 0, 1.0), (3 * 3600, 0, 0.5)]


def test_totals_per_local_day(writer, store, clock):
    autumn = parse_time("2026-10-25", HEL, now=T0)
    for h in range(25):
        writer.handle(Pulse("a", autumn + h * 3600 + 60, "in"))
    writer.handle(Pulse("a", autumn - 60, "in"))  # 23:59 the day before
    writer.flush()
    rows = totals(store, autumn, autumn + 25 * 3600, "1d", HEL, ["a"])
    assert [(r.in_count, r.end - r.start) for r in rows] == [(25, 25 * 3600)]


def test_parse_time_forms():
    assert parse_time("2026-11-23", HEL, now=T0) == T0 - 9 * 3600
    assert parse_time("2026-11-23T09:00", HEL, now=T0) == T0
    assert parse_time("2026-11-23T07:00:00Z", HEL, now=T0) == T0
    assert parse_time("now", HEL, now=T0) == T0
    assert parse_time("yesterday", HEL, now=T0) == T0 - 9 * 3600 - 86400
    with pytest.raises(ExportError, match="cannot read the time"):
        parse_time("last tuesday", HEL, now=T0)


def test_database_file_permissions_error(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o500)
    try:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        with pytest.raises(StorageError):
            Store.open(d / "x.db")
    finally:
        os.chmod(d, 0o700)


def _events(store):
    return store.conn.execute("SELECT count(*) FROM events").fetchone()[0]


def test_light_flush_leaves_heartbeat_fields_for_the_heartbeat(writer, store, clock):
    """Between heartbeats a flush rewrites only the counts (SD-card wear); raw events go
    with ``events=True``, last pulse, last_seen and meta with the heartbeat."""
    writer.flush(meta={"x": 1})
    clock.advance(10)
    writer.handle(Pulse("a", clock.now(), "in"))
    assert writer.pending and writer.events_pending == 1
    writer.flush()
    assert store.totals_between(0, 2e10) == {"a": (1, 0)}
    assert not writer.pending and writer.events_pending == 1  # counts out, event held
    assert _events(store) == 0
    assert store.runs(0, 2e10)[0][1] == T0  # last_seen not moved by a light flush
    assert store.sensor_rows()[0]["last_pulse"] is None
    writer.handle(Pulse("a", clock.now(), "out"))
    writer.flush(events=True)
    assert _events(store) == 2 and writer.events_pending == 0
    assert store.runs(0, 2e10)[0][1] == T0
    assert store.sensor_rows()[0]["last_pulse"] is None
    writer.flush(meta={"x": 2})
    assert store.runs(0, 2e10)[0][1] == T0 + 10
    assert store.sensor_rows()[0]["last_pulse"] == T0 + 10
    assert store.meta("x") == 2


def test_a_heartbeat_writes_the_raw_events_held(writer, store, clock):
    writer.handle(Pulse("a", T0 + 1, "in"))
    writer.flush()
    assert _events(store) == 0
    writer.flush(meta={})
    assert _events(store) == 1 and writer.events_pending == 0
    assert writer.stats.pulses == 1


def test_a_database_from_a_newer_kiosk_is_refused_by_name(tmp_path):
    path = tmp_path / "newer.db"
    with Store.open(path) as s, s.write() as conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
                     " VALUES ('kiosk', 'm099_future', '2030-01-01')")
    with pytest.raises(StorageError, match=r"newer kiosk \(migration m099_future is unknown"):
        Store.open(path)


def test_another_applications_database_gets_no_kiosk_tables(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
    c.close()
    with pytest.raises(StorageError, match="another application's SQLite database"):
        Store.open(path)
    with sqlite3.connect(path) as c:
        names = [r[0] for r in c.execute("SELECT name FROM sqlite_master")]
    c.close()
    assert names == ["customers"]


def test_run_refuses_a_foreign_database_in_one_line(tmp_path, config_file):
    import subprocess
    import sys

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
    c.close()
    cfg = config_file("""
[[sensors]]
id = "sim"
type = "simulated"
""")
    r = subprocess.run([sys.executable, "-m", "kiosk", "run", "--config", str(cfg), "--db", str(db)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("kiosk: error: ")
    assert "another application's SQLite database (tables customers)" in r.stderr
    assert "Traceback" not in r.stderr


# -- serial_totals: a cumulative counter's last totals, with its counts -------------------------


def _totals(sid: str, i: int, o: int, suspect: int | None = None) -> TotalsState:
    return TotalsState(sid, T0, "/dev/ttyUSB0", ChannelState(i, suspect, suspect is not None),
                       ChannelState(o))


def test_totals_are_written_with_their_counts_and_kept_on_failure(writer, store):
    writer.handle(Pulse("b", T0, "in", 3))
    writer.handle(_totals("b", 103, 50, suspect=7))
    blocker = sqlite3.connect(store.path, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    store.conn.execute("PRAGMA busy_timeout = 50")
    assert writer.flush() is False  # neither the counts nor the totals landed
    assert store.serial_totals() == {} and store.totals_between(T0, T0 + 900) == {}
    blocker.rollback()
    blocker.close()
    assert writer.flush() is True  # both, in one transaction
    assert store.totals_between(T0, T0 + 900) == {"b": (3, 0)}
    assert store.serial_totals() == {"b": _totals("b", 103, 50, suspect=7)}


def test_unchanged_totals_cost_no_write_and_a_restart_reads_them(writer, store, clock):
    writer.handle(_totals("b", 103, 50))
    assert writer.flush() is True
    writer.handle(_totals("b", 103, 50))  # an idle device repeats its totals
    assert not writer.pending
    w2 = Writer(store, clock=clock, sensor_kinds={"b": "serial"})
    w2.load_totals()
    assert w2.totals == {"b": _totals("b", 103, 50)}
    w2.forget_totals("b")  # the sensor now counts events
    assert w2.pending and w2.flush() is True
    assert store.serial_totals() == {}


def test_the_dashboards_annotator_writes_annotations_and_nothing_else(tmp_path):
    """Store.open_annotator: an SQLite authorizer allows rows in annotations and journal
    only; counts, uploads and the schema are refused, and nothing is created."""
    import sqlite3
    from zoneinfo import ZoneInfo

    from kiosk.annotations import add, delete
    from kiosk.exc import StorageError

    db = tmp_path / "counts.db"
    with pytest.raises(StorageError, match="no database yet"):
        Store.open_annotator(db)
    assert not db.exists()
    Store.open(db).close()
    before = sorted(p.name for p in tmp_path.iterdir())
    with Store.open_annotator(db) as s:
        aid = add(s, start=1_790_000_000, end=1_790_003_600, kind="closed", note="holiday",
                  sensor_id=None, tz=ZoneInfo("Europe/Helsinki"), now=1_790_000_000)
        delete(s, aid, tz=ZoneInfo("Europe/Helsinki"), now=1_790_000_100)
        for sql in ("INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                    " VALUES ('a', 0, 1, 0, 0)", "DELETE FROM uploads", "UPDATE runs SET pid = 1",
                    "DROP TABLE annotations", "CREATE TABLE x (a)"):
            with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
                s.conn.execute(sql)
    with Store.open_reader(db) as s:
        assert s.conn.execute("SELECT count(*) FROM annotations").fetchone()[0] == 1
        assert s.conn.execute("SELECT count(*) FROM counts").fetchone()[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) \
        == [n for n in before if not n.endswith(("-wal", "-shm"))]
