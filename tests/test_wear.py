"""SD-card wear: what the daemon writes when, and that the durability promise still holds.

The cadence tests run the real :class:`~kiosk.daemon.Daemon` loop on a clock the loop moves
itself (as ``benchmarks/bench_wear.py`` does): whenever the loop is about to wait, the clock
jumps to the end of that wait or to the next scheduled pulse, so a simulated hour takes a
second and every commit happens at the clock time it would in the field.  Commits are
counted, not timed.  The process tests kill a real ``kiosk run`` with SIGKILL and SIGTERM.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from kiosk.clock import ManualClock
from kiosk.config import load as load_config
from kiosk.daemon import BEAT_AFTER_S, EVENTS_EVERY_S, HEARTBEAT_S, Daemon
from kiosk.events import Pulse
from kiosk.store import NEW_DB_PAGE_SIZE, Store
from tests.conftest import SERIAL_SENSOR, db_totals, simulated_sensor, wait_for

T0 = 1_790_000_000.0  # not a multiple of HEARTBEAT_S: the first heartbeat comes early
FLUSH_S = 2.0  # the default flush_interval_s (the config below leaves it unset)


def _config(tmp_path: Path) -> Path:
    from tests.conftest import config_text

    path = tmp_path / "kiosk.toml"
    path.write_text(config_text(tmp_path / "counts.db",
                                simulated_sensor("door", weekday_visits=0, weekend_visits=0)))
    return path


class LoopClock(ManualClock):
    """A ManualClock the daemon loop moves: each wait jumps to its end or the next pulse.

    ``check(now)`` runs on the loop's thread each time the loop is about to wait, with the
    database quiet; the day ends (``request_stop``) at ``end``.
    """

    def __init__(self, start: float, end: float, pulses: list[Pulse], check=None) -> None:
        super().__init__(start)
        self.end, self.pulses, self.next, self.check = end, pulses, 0, check
        self.daemon: Daemon | None = None
        self.stopping = False

    def real_timeout(self, seconds: float) -> float:
        d = self.daemon
        if d is None or d.writer is None or self.stopping:
            return super().real_timeout(seconds)
        now = self.now()
        if self.check is not None:
            self.check(now)
        target = min(now + max(0.0, seconds), self.end)
        if self.next < len(self.pulses):
            target = min(target, self.pulses[self.next].ts)
        self.advance(target - now)
        while self.next < len(self.pulses) and self.pulses[self.next].ts <= target:
            d.queue.put(self.pulses[self.next])
            self.next += 1
        if target >= self.end:
            self.stopping = True
            d.request_stop()
        else:
            d.wake()  # go round now rather than after the queue's 1 ms minimum wait
        return 0.0


@contextmanager
def counted_commits():
    """Every committed write transaction of any Store that changed a row (one that changed
    nothing writes nothing), as the clock time it happened at."""
    times: list[float] = []
    write = Store.write
    clock: list[ManualClock] = []

    @contextmanager
    def counted(self):
        before = self.conn.total_changes
        with write(self) as conn:
            yield conn
        if self.conn.total_changes > before:
            times.append(round(clock[0].now(), 3) if clock else 0.0)

    Store.write = counted  # type: ignore[method-assign]
    try:
        yield times, clock
    finally:
        Store.write = write  # type: ignore[method-assign]


def run_hour(tmp_path: Path, pulses: list[Pulse], check=None) -> tuple[list[float], Daemon]:
    """Run the daemon from T0 for one simulated hour with ``pulses``; the commit times.

    The loop runs in this (the main) thread and moves the clock itself: no other thread."""
    clock = LoopClock(T0, T0 + 3600, pulses, check)
    d = Daemon(load_config(_config(tmp_path)), clock=clock)
    clock.daemon = d
    with counted_commits() as (times, holder):
        holder.append(clock)
        assert d.run() == 0
    return times, d


def _beats_in(a: float, b: float) -> int:
    """Heartbeat moments (BEAT_AFTER_S past a multiple of HEARTBEAT_S) in (a, b]."""
    return int((b - BEAT_AFTER_S) // HEARTBEAT_S) - int((a - BEAT_AFTER_S) // HEARTBEAT_S)


def _is_beat(t: float) -> bool:
    return round(t - BEAT_AFTER_S, 3) % HEARTBEAT_S == 0


def test_a_quiet_hour_costs_one_heartbeat_commit_every_heartbeat(tmp_path):
    times, _ = run_hour(tmp_path, [])
    hour = [t for t in times if T0 + 10 < t < T0 + 3600]  # after the first flush
    assert len(hour) == _beats_in(T0, T0 + 3600 - 1) == 20
    assert all(_is_beat(t) for t in hour)  # just after the wall clock's multiples
    # ... so last_seen passes every 15-minute boundary (uploads wait for it) a second later
    boundaries = [b for b in range(int(T0) // 900 * 900 + 900, int(T0) + 3600, 900)]
    assert len(boundaries) == 4
    assert all(b + BEAT_AFTER_S in hour for b in boundaries)
    # before: the run record and the first flush at T0 (which carries the sensors' first
    # states too); after: the last flush and the stop
    assert times.count(T0) == 2 and times.count(T0 + 3600) == 2
    assert len(times) == 2 + len(hour) + 2


def test_a_steady_hour_commits_once_per_pulse_window_and_keeps_the_promise(tmp_path):
    """A pulse every 10 s (never within a flush interval of a heartbeat): one counts commit
    per pulse, plus the heartbeats; raw events ride on counts commits once a minute."""
    pulses = []
    for k in range(20):
        base = T0 - T0 % HEARTBEAT_S + HEARTBEAT_S * k  # a heartbeat at base + 1
        pulses += [Pulse("door", base + 5 + 10 * j, "in") for j in range(18)]
    pulses = [p for p in pulses if T0 + 10 < p.ts < T0 + 3600 - 10]
    db = tmp_path / "counts.db"
    seen: dict[str, float] = {"events_lag": 0.0, "last_seen_lag": 0.0}
    reader: list[sqlite3.Connection] = []

    def check(now: float) -> None:
        if not reader:
            reader.append(sqlite3.connect(db))
        conn = reader[0]
        due = [p for p in pulses if p.ts <= now - FLUSH_S - 1e-3]
        stored = conn.execute("SELECT coalesce(sum(in_count), 0) FROM counts").fetchone()[0]
        assert stored >= len(due), f"at +{now - T0:.1f} s: {stored} of {len(due)} counted"
        assert stored <= len([p for p in pulses if p.ts <= now + 1e-3])
        events = conn.execute("SELECT count(*), max(ts) FROM events").fetchone()
        unwritten = [p.ts for p in pulses if p.ts <= now][events[0]:]
        if unwritten:
            seen["events_lag"] = max(seen["events_lag"], now - unwritten[0])
        last_seen = conn.execute("SELECT max(last_seen) FROM runs").fetchone()[0]
        seen["last_seen_lag"] = max(seen["last_seen_lag"], now - last_seen)

    times, d = run_hour(tmp_path, pulses, check)
    reader[0].close()
    hour = [t for t in times if T0 + 10 < t < T0 + 3600]  # after the first flush
    beats = _beats_in(T0, T0 + 3600 - 1)
    assert len(hour) == len(pulses) + beats
    counts_commits = sorted(t for t in hour if not _is_beat(t))
    assert counts_commits == [round(p.ts + FLUSH_S, 3) for p in pulses]
    # raw events wait at most a minute and a flush interval while pulses keep coming
    assert seen["events_lag"] <= EVENTS_EVERY_S + 10 + FLUSH_S
    assert seen["events_lag"] > 10 * FLUSH_S  # ... and do wait: not on every 2-s commit
    assert seen["last_seen_lag"] <= HEARTBEAT_S
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(pulses)
    conn.close()
    assert db_totals(db) == (len(pulses), 0)
    assert d.writer is not None and d.writer.events_pending == 0


def test_a_burst_shares_one_commit(tmp_path):
    """Pulses within one flush interval of the first pending one go out in one commit."""
    start = T0 + 20  # far from a heartbeat (T0 + 101)
    pulses = [Pulse("door", start + 0.1 * i, "in") for i in range(15)]  # 1.4 s of traffic
    times, _ = run_hour(tmp_path, pulses)
    assert [t for t in times if start <= t < start + 50] == [start + FLUSH_S]
    assert db_totals(tmp_path / "counts.db") == (15, 0)


# -- the promise with real processes ------------------------------------------------------------


def _events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT coalesce(sum(count), 0) FROM events").fetchone()[0]
    finally:
        conn.close()


def test_kill9_keeps_the_counts_of_pulses_whose_raw_events_were_still_in_memory(
        config_file, daemon, pty_feeder, tmp_path):
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5)
    db = tmp_path / "counts.db"
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN 5\nOUT 2\n" * 10)
    wait_for(lambda: db_totals(db) == (50, 20), what="counts committed")
    assert _events(db) == 0  # the raw events wait for the minute's commit or the heartbeat
    d.kill9()
    assert db_totals(db) == (50, 20)  # the counts are the promise; the raw events are lost
    assert _events(db) == 0


def test_sigterm_writes_every_raw_event(config_file, daemon, pty_feeder, tmp_path):
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5)
    db = tmp_path / "counts.db"
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"IN 5\nOUT 2\n" * 10)
    wait_for(lambda: db_totals(db) == (50, 20), what="counts committed")
    assert d.terminate() == 0, d.output()
    assert _events(db) == 70
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT last_pulse FROM sensors WHERE sensor_id = 'door'").fetchone()[0]
    conn.close()


# -- pages, liveness ---------------------------------------------------------------------------


def test_new_databases_get_small_pages_and_old_ones_keep_theirs(tmp_path):
    import sqlite_utils

    from kiosk.store import migrations

    with Store.open(tmp_path / "new.db") as s:
        assert s.conn.execute("PRAGMA page_size").fetchone()[0] == NEW_DB_PAGE_SIZE == 1024
    old = tmp_path / "old.db"  # as an earlier kiosk made it: 4,096-byte pages
    c = sqlite3.connect(old)
    c.execute("PRAGMA page_size = 4096")
    migrations.apply(sqlite_utils.Database(c))
    c.close()
    with Store.open(old) as s:
        assert s.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        s.write_batch(now=T0, counts={("a", 0): [1, 0]})
    assert db_totals(old) == (1, 0)


def test_status_calls_a_daemon_stalled_after_three_missed_heartbeats(tmp_path):
    import os
    from zoneinfo import ZoneInfo

    from kiosk.status import STALL_HEARTBEATS, collect

    with Store.open(tmp_path / "counts.db") as store:
        run = store.start_run(now=T0, pid=os.getpid(), version="t")
        assert run
        store.set_meta(daemon={"pid": os.getpid(), "heartbeat_s": HEARTBEAT_S, "speed": 1})
        tz = ZoneInfo("Europe/Helsinki")
        limit = T0 + STALL_HEARTBEATS * HEARTBEAT_S + 10
        assert collect(store, tz=tz, config=None, now=limit)["daemon"]["state"] == "running"
        assert collect(store, tz=tz, config=None, now=limit + 1)["daemon"]["state"] == "stalled"
        store.set_meta(daemon={"pid": os.getpid(), "speed": 1})  # no period recorded
        assert collect(store, tz=tz, config=None, now=limit + 1)["daemon"]["state"] == "running"
