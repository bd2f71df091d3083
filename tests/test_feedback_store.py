"""Answers of feedback terminals through the writer into SQLite: buckets per terminal and
level, raw presses, failed flushes, an unset clock, and the daemon as a real process."""

from __future__ import annotations

import sqlite3

import pytest

from kiosk.buckets import bucket_start
from kiosk.clock import ManualClock
from kiosk.events import Answer, Pulse
from kiosk.exc import StorageError
from kiosk.store import Store
from kiosk.writer import Writer
from tests.conftest import wait_for

T0 = 1_790_000_000.0


def answer(ts: float, level: str = "happy", rank: int = 1, repeated: bool = False) -> Answer:
    return Answer("exit", ts, level, rank, 4, repeated)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "counts.db")
    yield s
    s.close()


def test_answers_land_in_buckets_beside_the_counts(store):
    clock = ManualClock(T0)
    w = Writer(store, clock=clock, sensor_kinds={"door": "gpio", "exit": "feedback"})
    w.handle(Pulse("door", T0, "in"))
    for k in range(5):
        w.handle(answer(T0 + k))
    w.handle(answer(T0 + 5, repeated=True))
    w.handle(answer(T0 + 900, "very_unhappy", 3))
    assert w.pending and w.pending_answers() == {"exit": [6, 1]}
    assert w.flush()
    rows = store.feedback_buckets(0, 2e9)
    assert [(k.start, k.level, k.rank, k.scale, t.answers, t.repeated) for k, t in rows] == [
        (bucket_start(T0), "happy", 1, 4, 5, 1),
        (bucket_start(T0 + 900), "very_unhappy", 3, 4, 1, 0)]
    assert store.feedback_events(0, 2e9) == []  # raw presses are lazy, like pulse events
    assert w.flush(events=True)
    events = store.feedback_events(0, 2e9)
    assert len(events) == 7 and sum(e.repeated for e in events) == 1
    # the same transaction: a count and an answer of one flush both land
    assert store.buckets(0, 2e9) == [("door", bucket_start(T0), 1, 0)]
    w.handle(answer(T0 + 10))
    assert w.flush()
    (row,) = [r for r in store.feedback_rows(0, 2e9) if r.level == "happy"]
    assert (row.answers, row.repeated) == (6, 1)
    assert w.flush(meta={})
    assert store.conn.execute("SELECT last_pulse FROM sensors WHERE sensor_id = 'exit'"
                              ).fetchone()[0] == T0 + 900


def test_a_failed_flush_keeps_the_answers_for_the_next(store, monkeypatch):
    clock = ManualClock(T0)
    w = Writer(store, clock=clock, sensor_kinds={"exit": "feedback"})
    for k in range(3):
        w.handle(answer(T0 + k))
    real = store.write_batch

    def full(**kw):
        raise StorageError("database or disk is full")

    monkeypatch.setattr(store, "write_batch", full)
    assert not w.flush(events=True)
    assert w.pending_answers() == {"exit": [3, 0]}
    assert w.held().answers == 3  # what a stop now would lose, told by record_loss
    monkeypatch.setattr(store, "write_batch", real)
    assert w.flush(events=True)
    assert [r.answers for r in store.feedback_rows(0, 2e9)] == [3]
    assert len(store.feedback_events(0, 2e9)) == 3


def test_answers_on_an_unset_clock_wait_and_are_placed_by_boot_time(store):
    clock = ManualClock(T0 - 86400 * 300)  # fake-hwclock: the wall clock is 300 days behind
    w = Writer(store, clock=clock, sensor_kinds={"exit": "feedback"})
    w.clock_trusted = False
    boot0 = clock.boottime()
    w.handle(answer(clock.now(), "very_happy", 0))
    w.handle(answer(clock.now() + 1, "very_happy", 0, repeated=True))
    assert w.flush()
    assert store.feedback_rows(0, 3e9) == [] and store.unplaced_answers() == 2
    assert store.needs_placement()
    # NTP answers 60 s later: the true time is T0 + 60 at boot time boot0 + 60
    clock.advance(60)
    offset = (T0 + 60) - clock.boottime()
    p = store.place_unplaced(boot_id=clock.boot_id(), offset=offset, now=T0 + 60)
    assert p.answers == 2
    (row,) = store.feedback_rows(0, 3e9)
    assert (row.level, row.answers, row.repeated) == ("very_happy", 1, 1)
    (key, _), = store.feedback_buckets(0, 3e9)
    assert key.start == bucket_start(offset + boot0)
    assert store.unplaced_answers() == 0 and not store.needs_placement()


def test_raw_presses_are_pruned_like_pulse_events(store):
    clock = ManualClock(T0)
    w = Writer(store, clock=clock, sensor_kinds={"exit": "feedback"})
    w.handle(answer(T0 - 40 * 86400))
    w.handle(answer(T0))
    assert w.flush(events=True)
    store.prune(now=T0, event_retention_days=30, journal_retention_days=365)
    assert [e.ts for e in store.feedback_events(0, 2e9)] == [T0]
    assert sum(r.answers for r in store.feedback_rows(0, 2e9)) == 2  # buckets are never pruned


FEEDBACK_SIM = """
[[sensors]]
id = "entrance"
type = "simulated"
weekday_visits = 20000
weekend_visits = 20000
weekday_hours = "00:00-24:00"
weekend_hours = "00:00-24:00"
seed = 3

[[sensors]]
id = "exit-feedback"
type = "feedback-simulated"
answers_per_day = 2000
weekend_answers_per_day = 2000
weekday_hours = "00:00-24:00"
weekend_hours = "00:00-24:00"
repeat_share = 0.2
seed = 4
"""


def _feedback(db) -> tuple[int, int, int, int]:
    conn = sqlite3.connect(db)
    try:
        a, r = conn.execute("SELECT coalesce(sum(answers), 0), coalesce(sum(repeated), 0)"
                            " FROM feedback").fetchone()
        ea, er = conn.execute("SELECT coalesce(sum(1 - repeated), 0), coalesce(sum(repeated), 0)"
                              " FROM feedback_events").fetchone()
        return a, r, ea, er
    finally:
        conn.close()


def test_daemon_keeps_simulated_answers_through_sigterm_and_kill9(config_file, daemon,
                                                                  tmp_path):
    """``kiosk run --speed 3600`` with a simulated door and terminal: the stored buckets hold
    exactly the raw presses after SIGTERM; after a kill -9 the restarted daemon adds to them."""
    cfg = config_file(FEEDBACK_SIM, flush=0.25)
    db = tmp_path / "counts.db"
    d = daemon(cfg, "--speed", "3600")
    d.wait_ready()
    wait_for(lambda: db.exists() and _feedback(db)[0] >= 150, timeout=30,
             what="150 answers stored")
    assert d.terminate() == 0, d.output()
    a, r, ea, er = _feedback(db)
    assert (a, r) == (ea, er) and a >= 150 and r > 0
    conn = sqlite3.connect(db)
    levels = dict(conn.execute("SELECT level, sum(answers) FROM feedback GROUP BY level"))
    visits = conn.execute("SELECT sum(in_count) FROM counts").fetchone()[0]
    conn.close()
    assert set(levels) == {"very_happy", "happy", "unhappy", "very_unhappy"}
    assert levels["very_happy"] > levels["very_unhappy"]
    assert visits > 5 * a  # 20,000 visits and 2,000 answers a day
    with Store.open_reader(db) as reader:  # a terminal counts answers, not visits
        assert reader.sensor_ids() == ["entrance"]
        assert reader.feedback_terminal_ids() == ["exit-feedback"]
    d2 = daemon(cfg, "--speed", "3600")
    d2.wait_ready()
    wait_for(lambda: _feedback(db)[0] >= a + 100, timeout=30, what="100 more answers")
    d2.kill9()
    a2, _r2, _ea2, _er2 = _feedback(db)
    assert a2 >= a + 100  # what was flushed before the kill stays
    assert "ignoring unknown message" not in d.output() + d2.output()


def test_button_presses_reach_the_database_through_the_daemon(tmp_path):
    """The whole daemon in-process with a beam and a feedback terminal on MockFactory:
    answers, a child's burst, and a held button end in the buckets and the raw presses."""
    import threading
    import time

    from gpiozero.pins.mock import MockFactory

    from kiosk import config
    from kiosk.daemon import Daemon
    from tests.conftest import config_text, gpio_sensor

    terminal = ('\n[[sensors]]\nid = "exit"\ntype = "feedback"\n'
                'buttons = { very_happy = 5, happy = 6, unhappy = 13 }\nled_pin = 26\n'
                'stuck_after_s = 5\n')
    cfg = config.loads(config_text(tmp_path / "c.db", gpio_sensor("beam", 17) + terminal,
                                   flush=0.2))
    factory = MockFactory()
    clock = ManualClock(1_795_417_200.0)
    d = Daemon(cfg, clock=clock, pin_factory=factory)
    beam, good, ok, bad = (factory.pin(n) for n in (17, 5, 6, 13))

    def press(pin, hold: float = 0.15, after: float = 4.0) -> None:
        pin.drive_low()
        clock.advance(hold)
        pin.drive_high()
        clock.advance(after)

    def drive() -> None:
        while d.writer is None or len(d.sensors) < 2 or d.sensors[1].state != "ok":
            time.sleep(0.01)
        for _ in range(10):
            press(beam, 0.2, 1.0)
        for _ in range(3):
            press(good)
        press(ok)
        for _ in range(20):  # a child: one answer, nineteen repeated presses
            press(bad, 0.1, 0.4)
        clock.advance(4)
        bad.drive_low()  # held for 8 s: a fault, not an answer
        for _ in range(16):
            clock.advance(0.5)
            time.sleep(0.02)  # let the loop tick and see it
        deadline = time.monotonic() + 10
        while d.sensors[1].state != "stuck" and time.monotonic() < deadline:
            clock.advance(0.1)
            time.sleep(0.02)
        bad.drive_high()
        clock.advance(3)
        d.request_stop()

    t = threading.Thread(target=drive)
    t.start()
    assert d.run() == 0
    t.join()
    factory.reset()
    with Store.open_reader(tmp_path / "c.db") as s:
        assert s.totals_between(0, 2e10) == {"beam": (10, 0)}
        rows = {r.level: (r.answers, r.repeated) for r in s.feedback_rows(0, 2e10)}
        assert rows == {"very_happy": (3, 0), "happy": (1, 0), "unhappy": (1, 19)}
        assert len(s.feedback_events(0, 2e10)) == 24
        kinds = [r[0] for r in s.conn.execute(
            "SELECT message FROM journal WHERE sensor_id = 'exit'")]
        assert any("stuck button" in m for m in kinds)
