"""Feedback terminals in `kiosk status` and the journal: answers today, a stuck button, and a
terminal silent for a whole day on which visits were counted (a loose cable)."""

from __future__ import annotations

import os
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from kiosk.clock import ManualClock
from kiosk.config import loads
from kiosk.daemon import Daemon
from kiosk.events import Answer, Pulse, SensorEvent
from kiosk.feedback import SILENT_MIN_VISITS, silent_day
from kiosk.periods import local_midnight
from kiosk.status import StatusCode, collect, render
from kiosk.store import Store
from kiosk.writer import Writer
from tests.conftest import config_text

TZ = ZoneInfo("Europe/Helsinki")
TODAY = date(2026, 11, 19)
NOW = local_midnight(TODAY, TZ) + 11 * 3600
SENSORS = """
[[sensors]]
id = "door"
type = "gpio"
pin = 17

[[sensors]]
id = "exit"
type = "feedback"
buttons = { very_happy = 5, happy = 6, unhappy = 13, very_unhappy = 19 }
"""


@pytest.fixture
def site(tmp_path):
    cfg = loads(config_text(tmp_path / "counts.db", SENSORS))
    store = Store.open(tmp_path / "counts.db")
    w = Writer(store, clock=ManualClock(NOW), sensor_kinds={"door": "gpio", "exit": "feedback"})
    yield cfg, store, w
    store.close()


def visits_on(w: Writer, d: date, n: int) -> None:
    t0 = local_midnight(d, TZ) + 9 * 3600
    for k in range(n):
        w.handle(Pulse("door", t0 + k * 10, "in"))


def running(store: Store) -> None:
    """This process plays the running daemon (its pid, an open run)."""
    store.start_run(now=NOW - 60, pid=os.getpid(), version="t")
    store.set_meta(daemon={"pid": os.getpid(), "version": "t", "started_at": NOW - 60})


def test_a_terminal_silent_on_a_counted_day_is_a_fault(site):
    cfg, store, w = site
    yesterday = TODAY - timedelta(days=1)
    visits_on(w, yesterday - timedelta(days=1), 400)  # the day before: answers
    w.handle(Answer("exit", local_midnight(yesterday, TZ) - 3600, "happy", 1, 4))
    visits_on(w, yesterday, SILENT_MIN_VISITS)  # yesterday: visits, not one press
    w.handle(Answer("exit", NOW - 100, "very_happy", 0, 4))  # today it answers again
    w.handle(Answer("exit", NOW - 99, "very_happy", 0, 4, True))
    assert w.flush()
    running(store)
    silent = silent_day(store, "exit", TZ, NOW)
    assert silent is not None and silent.day == yesterday and silent.visits == SILENT_MIN_VISITS
    info = collect(store, tz=TZ, config=cfg, now=NOW)
    (term,) = [s for s in info["sensors"] if s["sensor_id"] == "exit"]
    assert term["answers_today"] == {"very_happy": 1} and term["repeated_today"] == 1
    assert term["silent_day"] == {"date": yesterday.isoformat(), "visits": SILENT_MIN_VISITS}
    assert info["health"]["exit_code"] == StatusCode.SENSOR_FAULT
    assert any("exit silent on 2026-11-18" in p for p in info["health"]["problems"])
    text = render(info)
    assert "answers:  exit: 1 today (very happy 1), 1 repeated press(es) left out" in text
    assert "SILENT on 2026-11-18" in text


def test_a_quiet_day_or_a_day_with_presses_is_not_silent(site):
    cfg, store, w = site
    yesterday = TODAY - timedelta(days=1)
    visits_on(w, yesterday, SILENT_MIN_VISITS - 1)  # too few visits to tell
    assert w.flush()
    assert silent_day(store, "exit", TZ, NOW) is None
    visits_on(w, yesterday, 100)
    w.handle(Answer("exit", local_midnight(yesterday, TZ) + 50000, "unhappy", 2, 4, True))
    assert w.flush()
    assert silent_day(store, "exit", TZ, NOW) is None  # a repeated press is a press: wired
    running(store)
    assert collect(store, tz=TZ, config=cfg, now=NOW)["health"]["exit_code"] == StatusCode.OK


def test_a_stuck_button_shows_in_status(site):
    cfg, store, w = site
    w.handle(SensorEvent("exit", NOW - 5, "state", "button 'unhappy' (GPIO13) held for 12 s: "
                         "a stuck button, not answers", "WARNING", "stuck"))
    assert w.flush()
    running(store)
    info = collect(store, tz=TZ, config=cfg, now=NOW)
    assert info["health"]["problems"] == ["sensor exit stuck"]
    assert "stuck button" in render(info, width=200)
    journal = [r[0] for r in store.conn.execute("SELECT message FROM journal")]
    assert any("stuck button" in m for m in journal)


def test_the_daemon_journals_a_silent_terminal_once(site):
    cfg, store, w = site
    visits_on(w, TODAY - timedelta(days=1), 500)
    assert w.flush()
    d = Daemon(cfg, clock=ManualClock(NOW))
    d.store, d.writer = store, w
    d._check_silent_terminals()
    d._check_silent_terminals()  # an hour later: already told
    lines = store.conn.execute("SELECT level, kind, sensor_id, message FROM journal"
                               " WHERE kind = 'feedback-silent'").fetchall()
    assert len(lines) == 1
    level, _kind, sid, message = lines[0]
    assert (level, sid) == ("WARNING", "exit")
    assert "no press at all on 2026-11-18 while 500 visits were counted" in message
