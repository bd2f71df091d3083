"""Staff commands: the local journal (kiosk log), importing history (kiosk import) and
annotations (kiosk annotate), on real databases written by the real writer."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from kiosk.annotations import (
    annotations_between,
    changed_ranges,
    flags_for,
    parse_range,
)
from kiosk.cli import cli
from kiosk.cli.staff import annotate_command, import_command, log_command
from kiosk.clock import ManualClock
from kiosk.config import load
from kiosk.daemon import Daemon
from kiosk.events import Rejected, SensorEvent
from kiosk.importer import imported_ranges, uploadable
from kiosk.periods import totals
from kiosk.store import Store
from kiosk.upload import Outcome, Uploader
from kiosk.writer import REJECT_LOG_INTERVAL_S, Writer
from tests.conftest import config_text, db_totals, fill_sample_db, simulated_sensor, wait_for

HEL = ZoneInfo("Europe/Helsinki")
T0 = 1_763_967_600.0  # 2025-11-24T07:00:00Z, a Monday, 09:00 in Helsinki (in the past)
SINCE, UNTIL = "2025-11-24T07:00:00Z", "2025-11-24T10:00:00Z"


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    """Our commands on the real group (the lead may have registered them already)."""
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    added = []
    for c in (log_command, import_command, annotate_command):
        if c.name not in cli.commands:
            cli.add_command(c)
            added.append(c.name)
    yield
    for name in added:
        cli.commands.pop(name, None)


def kiosk(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def fill(path: Path) -> Path:
    """Like test_cli.filled_db (tests.conftest.fill_sample_db) at this file's T0."""
    return fill_sample_db(path, T0)


@pytest.fixture
def filled_db(tmp_path) -> Path:
    return fill(tmp_path / "counts.db")


def export(db: Path, period: str = "15m", since: str = SINCE, until: str = UNTIL) -> str:
    r = kiosk("export", "--db", db, "--period", period, "--since", since, "--until", until)
    assert r.exit_code == 0, r.output
    return r.output


def five(csv_text: str) -> list[str]:
    """The data lines of an export without its coverage and imported columns."""
    return [",".join(line.split(",")[:5]) for line in csv_text.splitlines()[1:]]


def rows_of(db: Path, sql: str, *params) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(["sensor_id,start,end,in,out", *lines]) + "\n")
    return path


SENSORS = simulated_sensor("east-gate") + simulated_sensor("side-door")


def config(tmp_path: Path, db: Path, extra: str = "") -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(config_text(db, SENSORS, extra=extra))
    return path


# -- kiosk log ------------------------------------------------------------------------------------

@pytest.fixture
def journal_db(tmp_path) -> Path:
    """A journal written by the real writer, daemon and uploader (not by hand)."""
    db = tmp_path / "journal.db"
    cfg_path = config(tmp_path, db, '[upload]\nurl = "http://127.0.0.1:9/counts"\ntoken_file = "/t"\n')
    cfg = load(str(cfg_path))
    clock = ManualClock(T0)
    d = Daemon(cfg, clock=clock, config_path=str(cfg_path))
    d.store = store = Store.open(db)
    d.writer = w = Writer(store, clock=clock, sensor_kinds={"east-gate": "serial",
                                                              "side-door": "gpio"})
    w.run_id = store.start_run(now=T0, pid=1, version="t")
    w.journal("INFO", "daemon-start", "kiosk started")
    w.handle(SensorEvent("east-gate", T0 + 60, "state", "no data from /dev/ttyACM0 for 30 s",
                         "ERROR", "down"))
    w.handle(Rejected("east-gate", T0 + 120, "IN\\x00\\xff", "unknown line"))
    w.handle(Rejected("east-gate", T0 + 121, "??", "unknown line"))  # within the interval: summed
    w.handle(Rejected("east-gate", T0 + 120 + REJECT_LOG_INTERVAL_S, "XYZ", "unknown line"))
    w.handle(SensorEvent("east-gate", T0 + 300, "reconnect", "reconnected to /dev/ttyACM0",
                         "INFO", "ok"))
    w.handle(SensorEvent("side-door", T0 + 400, "state", "no pulse for 2 h while open",
                         "WARNING", "stuck"))
    assert w.flush()
    clock.advance(600)
    clock.jump(3600)  # NTP stepped the clock an hour ahead
    d._check_clock(T0 + 600, clock.now())
    up = Uploader(store, cfg, clock=clock)
    up._failed(Outcome("pause", 401, "HTTP 401"))
    up._failed(Outcome("retry", 503, "HTTP 503"))
    store.close()
    return db


def log(db: Path, *args: str):
    return kiosk("log", "--db", db, "--since", "2025-11-24", "--until", "2025-11-25", *args)


def test_log_shows_real_faults_with_their_levels(journal_db):
    r = log(journal_db)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "2025-11-24 09:00:00 +02:00  INFO     -          kiosk started"
    assert ("2025-11-24 09:01:00 +02:00  ERROR    east-gate  no data from /dev/ttyACM0 for 30 s"
            in lines)
    rejected = [x for x in lines if "rejected a serial line" in x]
    assert len(rejected) == 2
    assert rejected[0].startswith("2025-11-24 09:02:00 +02:00  WARNING  east-gate  ")
    assert "sample: 'IN\\\\x00\\\\xff'" in rejected[0]
    assert "sample: 'XYZ'" in rejected[1] and "2 rejected since the last report" in rejected[1]
    assert any("INFO     east-gate  reconnected" in x for x in lines)
    assert any("WARNING  side-door  no pulse for 2 h" in x for x in lines)
    assert ("2025-11-24 10:10:00 +02:00  WARNING  -          the wall clock stepped by +3600 s "
            "(NTP sync or manual change); the running record is split so the gap is not "
            "counted as running") in lines
    assert any("ERROR    -" in x and "uploads PAUSED: HTTP 401" in x for x in lines)
    assert any("WARNING  -" in x and "uploads failing: HTTP 503" in x for x in lines)
    # newest last
    stamps = [x[:19] for x in lines]
    assert stamps == sorted(stamps)


def test_log_level_filter_is_a_minimum(journal_db):
    r = log(journal_db, "--level", "warning")
    kinds = [json.loads(kiosk("log", "--db", journal_db, "--since", "2025-11-24", "--level",
                              "warning", "--format", "json").output)]
    assert r.exit_code == 0
    assert "INFO" not in r.output and "ERROR" in r.output and "WARNING" in r.output
    assert {e["level"] for e in kinds[0]} == {"WARNING", "ERROR"}
    r = log(journal_db, "--level", "ERROR")
    assert [x.split()[3] for x in r.output.splitlines()] == ["ERROR", "ERROR"]


def test_log_sensor_kind_since_and_limit(journal_db):
    r = log(journal_db, "--sensor", "east-gate")
    assert r.exit_code == 0
    assert len(r.output.splitlines()) == 4
    assert all("  east-gate  " in x for x in r.output.splitlines())
    r = log(journal_db, "--kind", "clock-jump,upload")
    assert len(r.output.splitlines()) == 3 and "clock stepped" in r.output
    r = log(journal_db, "--kind", "rejected-line", "--kind", "state")
    assert len(r.output.splitlines()) == 4
    r = kiosk("log", "--db", journal_db, "--since", "2025-11-24T09:04", "--until",
              "2025-11-24T09:06")
    assert r.output.splitlines() == [
        "2025-11-24 09:05:00 +02:00  INFO     east-gate  reconnected to /dev/ttyACM0"]
    r = log(journal_db, "--limit", "2")
    assert len(r.stdout.splitlines()) == 2 and "uploads failing" in r.stdout.splitlines()[-1]
    assert "showing the newest 2 of 9 entries" in r.stderr


def test_log_json(journal_db):
    r = log(journal_db, "--format", "json", "--sensor", "side-door")
    assert r.exit_code == 0
    assert json.loads(r.output) == [{
        "id": 6, "time": "2025-11-24T07:06:40Z", "local_time": "2025-11-24T09:06:40+02:00",
        "level": "WARNING", "kind": "state", "sensor_id": "side-door",
        "message": "no pulse for 2 h while open"}]


def test_log_default_is_the_last_day_and_empty_says_so(journal_db, filled_db):
    r = kiosk("log", "--db", journal_db)  # entries are a year old
    assert r.exit_code == 0
    assert r.output.startswith("no journal entries since ")
    r = log(filled_db, "--level", "error")
    assert r.output.strip() == ("no journal entries matching --level error since "
                                "2025-11-24 00:00:00 +02:00 until 2025-11-25 00:00:00 +02:00")
    r = kiosk("log", "--db", journal_db, "--since", "soon")
    assert r.exit_code == 2 and "cannot read the time 'soon'" in r.output and "24h" in r.output
    r = kiosk("log", "--db", journal_db, "--since", "400d", "--format", "json")
    assert r.exit_code == 0 and len(json.loads(r.output)) == 9


def test_log_uses_the_configured_time_zone(tmp_path, journal_db):
    cfg = tmp_path / "ny.toml"
    cfg.write_text(config_text(journal_db, SENSORS).replace("Europe/Helsinki", "America/New_York"))
    r = kiosk("log", "--config", cfg, "--since", "2025-11-24", "--kind", "daemon-start")
    assert r.output.startswith("2025-11-24 02:00:00 -05:00  INFO")


# -- kiosk import ---------------------------------------------------------------------------------

def test_import_round_trips_with_export(filled_db, tmp_path):
    original = export(filled_db)
    (tmp_path / "old.csv").write_text(original)
    fresh = tmp_path / "fresh.db"
    r = kiosk("import", tmp_path / "old.csv", "--db", fresh)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("imported 24 row(s) from old.csv (import #1): a, b")
    assert "kept for local reports" in r.stdout
    assert "fresh.db did not exist; creating a new database" in r.stderr
    # the same rows; the copy says they are imported (the export's last column)
    assert export(fresh) == original.replace(",no\n", ",yes\n")
    assert original.splitlines()[0] == "sensor_id,start,end,in,out,coverage,imported"
    assert ",no" in original and ",no\n" not in export(fresh)
    assert export(fresh, "1h") == export(filled_db, "1h").replace(",no\n", ",yes\n")
    assert db_totals(fresh) == db_totals(filled_db) == (10, 4)
    assert rows_of(fresh, "SELECT count(*) FROM counts WHERE import_id = 1") == [(24,)]
    with Store.open(fresh) as store:
        assert imported_ranges(store)[0] == ("a", int(T0), int(T0) + 900, False)
    r = kiosk("log", "--db", fresh, "--kind", "import")  # written now: within the last 24 h
    assert "INFO     -  imported 24 row(s) from old.csv" in r.output


def test_import_refuses_bad_rows_by_line_and_imports_nothing(tmp_path):
    db = fill(tmp_path / "counts.db")
    before = rows_of(db, "SELECT * FROM counts ORDER BY sensor_id, start")
    bad = write_csv(
        tmp_path / "bad.csv",
        "a,2025-11-20T07:00:00Z,2025-11-20T07:15:00Z,3,1",      # 2 good
        "a,2025-11-20T07:15:00Z,2025-11-20T07:15:00Z,3,1",      # 3 end == start
        "a,2025-11-20T07:20:00Z,2025-11-20T07:35:00Z,3,1",      # 4 not on a quarter hour
        "a,2025-11-20T08:00:00Z,2025-11-20T08:20:00Z,3,1",      # 5 not whole quarters
        "a,2025-11-20T09:00:00Z,2025-11-20T09:15:00Z,-3,1",     # 6 negative
        "a,2025-11-20T09:15:00Z,2025-11-20T09:30:00Z,2.5,1",    # 7 not whole
        "a,20.11.2025 10:00,2025-11-20T10:15:00Z,3,1",          # 8 bad time
        "a,2025-11-20T10:15:00,2025-11-20T10:30:00Z,3,1",       # 9 no time zone
        "main door,2025-11-20T11:00:00Z,2025-11-20T11:15:00Z,3,1",  # 10 invalid id
        "a,2025-11-20T07:00:00Z,2025-11-20T07:15:00Z,5,5",      # 11 duplicate of 2
        "a,2025-11-20T12:00:00Z,2025-11-20T12:15:00Z,3",         # 12 4 columns
        "",                                                      # 13 blank: skipped
        "b,2025-11-24T08:00:00Z,2025-11-24T09:00:00Z,0,4",      # 14 overlaps counted data
        "a,2099-01-01T00:00:00Z,2099-01-01T00:15:00Z,1,1",      # 15 in the future
    )
    r = kiosk("import", bad, "--db", db)
    assert r.exit_code == 1
    err = r.output.splitlines()
    assert err[0] == f"kiosk: error: {bad}: 12 problems in 13 row(s); nothing was imported"
    numbers = [int(x.split()[3].rstrip(":")) for x in err[1:] if x.startswith("kiosk: error: line")]
    assert numbers == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15]
    text = r.output
    assert "line 3: end 2025-11-20T07:15:00Z is not after start" in text
    assert "line 4: start 2025-11-20T07:20:00Z is not on a quarter hour" in text
    assert "not a whole number of quarter hours" in text
    assert "in '-3' is negative" in text and "in '2.5' is not a whole number" in text
    assert "cannot read the time '20.11.2025 10:00'" in text and "has no time zone" in text
    assert "sensor id 'main door' is not valid" in text
    assert "line 11: duplicate of line 2" in text
    assert "line 12: expected 5 columns" in text
    assert "line 14: b 2025-11-24T08:00:00Z..2025-11-24T09:00:00Z overlaps counts this kiosk " \
           "recorded for b" in text
    assert "line 15: the period 2099-01-01T00:00:00Z..2099-01-01T00:15:00Z has not ended yet" in text
    assert "this computer's clock says" in text
    assert rows_of(db, "SELECT * FROM counts ORDER BY sensor_id, start") == before
    assert rows_of(db, "SELECT count(*) FROM imports") == [(0,)]
    assert rows_of(db, "SELECT count(*) FROM journal WHERE kind = 'import'") == [(0,)]


def test_import_only_database_conflicts_are_found_in_the_transaction(tmp_path):
    db = fill(tmp_path / "counts.db")
    # The counter ran 07:00–10:00Z and first counted b at 08:01:40Z: from then on its quiet
    # hours are data too (zero visitors).  Before b's first visitor, and the day before, are
    # free to import.
    f = write_csv(tmp_path / "f.csv",
                  "b,2025-11-24T06:00:00Z,2025-11-24T08:00:00Z,9,9",
                  "b,2025-11-24T08:00:00Z,2025-11-24T09:00:00Z,9,9",
                  "b,2025-11-24T09:00:00Z,2025-11-24T10:00:00Z,9,9",
                  "b,2025-11-23T07:00:00Z,2025-11-23T08:00:00Z,9,9")
    r = kiosk("import", f, "--db", db)
    assert r.exit_code == 1
    assert "2 problems in 4 row(s)" in r.output
    assert "line 3: b 2025-11-24T08:00:00Z" in r.output and "line 4: b 2025-11-24T09:00:00Z" \
        in r.output and "(it counts b since 2025-11-24 10:00 +02:00)" in r.output
    assert db_totals(db) == (10, 4)
    first, _bad, _worse, last = f.read_text().splitlines()[1:]
    write_csv(f, first, last)
    r = kiosk("import", f, "--db", db)
    assert r.exit_code == 0, r.output
    assert db_totals(db) == (28, 22)


def test_import_a_file_twice_does_not_double_count(filled_db, tmp_path):
    f = write_csv(tmp_path / "old.csv",
                  "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,120,110",
                  "b,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,30,31")
    assert kiosk("import", f, "--db", filled_db).exit_code == 0
    assert db_totals(filled_db) == (160, 145)
    r = kiosk("import", f, "--db", filled_db)
    assert r.exit_code == 0
    assert "already imported on 2" in r.output and "(import #1, 2 row(s), kept locally)" in r.output
    assert "nothing changed" in r.output
    assert db_totals(filled_db) == (160, 145)
    # the same rows in another file (other line endings): nothing new
    g = tmp_path / "copy.csv"
    g.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    r = kiosk("import", g, "--db", filled_db)
    assert r.exit_code == 0 and "nothing to import: all 2 row(s) are already there" in r.output
    # overlapping rows with other values: refused without --replace
    h = write_csv(tmp_path / "fixed.csv", "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,125,110",
                  "a,2024-11-25T08:00:00Z,2024-11-25T09:00:00Z,50,50")
    r = kiosk("import", h, "--db", filled_db)
    assert r.exit_code == 1
    assert "line 2: a 2024-11-25T07:00:00Z..2024-11-25T08:00:00Z was imported with other values" \
           " (import #1" in r.output and "--replace" in r.output
    assert db_totals(filled_db) == (160, 145)
    assert rows_of(filled_db, "SELECT count(*) FROM imports") == [(1,)]


def test_import_replace(filled_db, tmp_path):
    f = write_csv(tmp_path / "daily.csv", "a,2024-11-24T22:00:00Z,2024-11-25T22:00:00Z,900,880")
    assert kiosk("import", f, "--db", filled_db).exit_code == 0
    hourly = write_csv(tmp_path / "hourly.csv",
                       "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,100,90",
                       "a,2024-11-25T08:00:00Z,2024-11-25T09:00:00Z,80,85")
    r = kiosk("import", hourly, "--db", filled_db)
    assert r.exit_code == 1 and "overlaps an earlier imported row (import #1: " \
                                "2024-11-24T22:00:00Z..2024-11-25T22:00:00Z" in r.output
    r = kiosk("import", hourly, "--db", filled_db, "--replace")
    assert r.exit_code == 0, r.output
    assert "imported 2 row(s) from hourly.csv (import #2)" in r.output
    assert "replaced 1 earlier imported row(s)" in r.output
    day = export(filled_db, "1d", "2024-11-25", "2024-11-26")
    assert five(day) == ["a,2024-11-24T22:00:00Z,2024-11-25T22:00:00Z,180,175"]
    assert db_totals(filled_db) == (190, 179)
    r = kiosk("import", "--list", "--db", filled_db)
    assert "#1" in r.output and "0 row(s) of 1 left" in r.output and "#2" in r.output
    # what the uploader looks at again: the replaced day too, whose bucket is gone
    with Store.open(filled_db) as store:
        assert changed_ranges(store, 0) == [(None, 1732485600, 1732572000),
                                            (None, 1732485600, 1732572000)]


def test_import_dry_run_writes_nothing(filled_db, tmp_path):
    f = write_csv(tmp_path / "old.csv", "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,120,110")
    r = kiosk("import", f, "--db", filled_db, "--dry-run")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("would import 1 row(s) from old.csv: a, 2024-11-25 09:00 +02:00")
    assert "dry run, nothing written" in r.output
    assert db_totals(filled_db) == (10, 4)
    assert rows_of(filled_db, "SELECT count(*) FROM imports") == [(0,)]
    missing = tmp_path / "none" / "counts.db"
    r = kiosk("import", f, "--db", missing, "--dry-run")
    assert r.exit_code == 0 and not missing.exists() and not missing.parent.exists()
    bad = write_csv(tmp_path / "bad.csv", "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,x,1")
    r = kiosk("import", bad, "--db", filled_db, "--dry-run")
    assert r.exit_code == 1 and "line 2: in 'x' is not a whole number" in r.output


def test_longer_rows_land_in_their_first_quarter_hour(tmp_path):
    db = tmp_path / "fresh.db"
    f = write_csv(tmp_path / "hours.csv",
                  "a,2024-11-25T07:00:00+00:00,2024-11-25T08:00:00+00:00,40,38",
                  "a,2024-11-25T10:00:00+02:00,2024-11-25T11:00:00+02:00,12,12",
                  # a whole local day over the spring DST change (23 h)
                  "a,2024-03-30T22:00:00Z,2024-03-31T21:00:00Z,500,480")
    r = kiosk("import", f, "--db", db)
    assert r.exit_code == 0, r.output
    assert rows_of(db, "SELECT start, in_count FROM counts ORDER BY start") == [
        (int(datetime(2024, 3, 30, 22, tzinfo=ZoneInfo("UTC")).timestamp()), 500),
        (int(datetime(2024, 11, 25, 7, tzinfo=ZoneInfo("UTC")).timestamp()), 40),
        (int(datetime(2024, 11, 25, 8, tzinfo=ZoneInfo("UTC")).timestamp()), 12),
    ]
    quarter = export(db, "15m", "2024-11-25T07:00:00Z", "2024-11-25T09:00:00Z")
    assert five(quarter) == ["a,2024-11-25T07:00:00Z,2024-11-25T07:15:00Z,40,38",
                                        "a,2024-11-25T08:00:00Z,2024-11-25T08:15:00Z,12,12"]
    hour = export(db, "1h", "2024-11-25T07:00:00Z", "2024-11-25T09:00:00Z")
    assert five(hour) == ["a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,40,38",
                                     "a,2024-11-25T08:00:00Z,2024-11-25T09:00:00Z,12,12"]
    day = export(db, "1d", "2024-03-31", "2024-04-01")
    assert five(day) == ["a,2024-03-30T22:00:00Z,2024-03-31T21:00:00Z,500,480"]


def test_import_checks_sensors_against_the_config(tmp_path):
    db = tmp_path / "counts.db"
    cfg = config(tmp_path, db)
    f = write_csv(tmp_path / "old.csv", "east-gate,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,1,1",
                  "main,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,1,1",
                  "main,2024-11-25T08:00:00Z,2024-11-25T09:00:00Z,1,1")
    r = kiosk("import", f, "--config", cfg)
    assert r.exit_code == 1
    assert "line 3 (and 1 more): unknown sensor 'main'; this kiosk has east-gate, side-door" \
           in r.output
    r = kiosk("import", f, "--config", cfg, "--any-sensor")
    assert r.exit_code == 0, r.output
    assert db_totals(db) == (3, 3)


def test_import_upload_choice(tmp_path):
    db = tmp_path / "counts.db"
    f = write_csv(tmp_path / "old.csv", "east-gate,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,7,6",
                  "east-gate,2024-11-25T08:00:00Z,2024-11-26T08:00:00Z,70,60")
    r = kiosk("import", f, "--config", config(tmp_path, db), "--upload")
    assert r.exit_code == 1 and "--upload needs a config with an [upload] section" in r.output
    cfg = config(tmp_path, db, '[upload]\nurl = "http://127.0.0.1:9/counts"\ntoken_file = "/t"\n')
    r = kiosk("import", f, "--config", cfg, "--upload")
    assert r.exit_code == 1
    assert "line 3: east-gate 2024-11-25T08:00:00Z..2024-11-26T08:00:00Z does not fit one " \
           "60-minute upload period" in r.output
    f.write_text("\n".join(f.read_text().splitlines()[:2]) + "\n")
    r = kiosk("import", f, "--config", cfg)
    assert r.exit_code == 0
    r = kiosk("import", f, "--config", cfg, "--upload")
    assert r.exit_code == 0 and "kept locally); nothing changed" in r.output
    assert "--replace --upload" in r.stderr
    r = kiosk("import", f, "--config", cfg, "--upload", "--replace")
    assert r.exit_code == 0, r.output
    assert "to be uploaded, flagged imported" in r.output
    with Store.open(db) as store:
        assert imported_ranges(store) == [("east-gate", 1732518000, 1732521600, True)]


def test_uploadable_leaves_out_local_imports(tmp_path):
    db = fill(tmp_path / "counts.db")
    local = write_csv(tmp_path / "local.csv", "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,5,5")
    up = write_csv(tmp_path / "up.csv", "b,2024-11-25T07:00:00Z,2024-11-25T07:15:00Z,2,2")
    assert kiosk("import", local, "--db", db).exit_code == 0
    cfg = config(tmp_path, db, '[upload]\nurl = "http://127.0.0.1:9/counts"\ntoken_file = "/t"\n')
    r = kiosk("import", up, "--config", cfg, "--upload", "--any-sensor")
    assert r.exit_code == 0, r.output
    store = Store.open(db)
    found = totals(store, 1732518000, T0 + 3 * 3600, "1h", HEL)
    sent = uploadable(store, found)
    assert ("a", 1732518000) in {(t.sensor_id, t.start) for t in found}
    assert ("a", 1732518000) not in {(t.sensor_id, t.start) for t in sent}
    b = next(t for t in sent if t.sensor_id == "b" and t.start == 1732518000)
    assert (b.in_count, b.out_count) == (2, 2)
    assert [t for t in sent if t.start >= T0] == [t for t in found if t.start >= T0]
    assert flags_for(store, "b", 1732518000, 1732521600, for_upload=True) == ["imported"]
    assert flags_for(store, "a", 1732518000, 1732521600, for_upload=True) == []
    assert flags_for(store, "a", 1732518000, 1732521600) == ["imported"]
    store.close()


def test_import_undo(filled_db, tmp_path):
    f = write_csv(tmp_path / "old.csv", "a,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,120,110")
    assert kiosk("import", f, "--db", filled_db).exit_code == 0
    r = kiosk("import", "--undo", "1", "--db", filled_db)
    assert r.exit_code == 0 and "removed 1 imported row(s)" in r.output
    assert db_totals(filled_db) == (10, 4)
    assert kiosk("import", "--undo", "1", "--db", filled_db).exit_code == 1
    r = kiosk("import", f, "--db", filled_db)  # may be imported again after undo
    assert r.exit_code == 0 and "import #2" in r.output


def test_import_file_problems(tmp_path, filled_db):
    r = kiosk("import", tmp_path / "nope.csv", "--db", filled_db)
    assert r.exit_code == 1 and "no such file" in r.output
    (tmp_path / "h.csv").write_text("sensor,from,to,in,out\na,x,y,1,1\n")
    r = kiosk("import", tmp_path / "h.csv", "--db", filled_db)
    assert r.exit_code == 1 and "line 1: the header must be sensor_id,start,end,in,out" in r.output
    (tmp_path / "e.csv").write_text("sensor_id,start,end,in,out\n")
    r = kiosk("import", tmp_path / "e.csv", "--db", filled_db)
    assert r.exit_code == 1 and "header but no rows" in r.output
    many = write_csv(tmp_path / "many.csv", *[f"a,x{i},y,1,1" for i in range(60)])
    r = kiosk("import", many, "--db", filled_db)
    assert "60 problems in 60 row(s)" in r.output and "… and 10 more" in r.output


# -- kiosk annotate -------------------------------------------------------------------------------

def test_parse_range_local_days_and_dst():
    now = T0
    day = parse_range("2026-12-24", HEL, now=now)
    assert day == (int(datetime(2026, 12, 24, tzinfo=HEL).timestamp()),
                   int(datetime(2026, 12, 25, tzinfo=HEL).timestamp()))
    a, b = parse_range("2026-03-29", HEL, now=now)  # spring forward
    assert b - a == 23 * 3600
    a, b = parse_range("2026-10-25", HEL, now=now)  # fall back
    assert b - a == 25 * 3600
    a, b = parse_range("2026-12-24..2026-12-26", HEL, now=now)
    assert (a, b - a) == (day[0], 3 * 86400)
    a, b = parse_range("2026-11-22T10:00..2026-11-22T12:00", HEL, now=now)
    assert datetime.fromtimestamp(a, HEL).hour == 10 and b - a == 7200
    a, b = parse_range("2026-11-22T08:00:00Z..2026-11-22T12:00+02:00", HEL, now=now)
    assert (a, b - a) == (int(datetime(2026, 11, 22, 8, tzinfo=ZoneInfo("UTC")).timestamp()), 7200)
    assert parse_range("yesterday", HEL, now=now)[1] == parse_range("today", HEL, now=now)[0]


@pytest.mark.parametrize("text, message", [
    ("2026-11-22T10:00", "is a moment, not a period"),
    ("2026-12-26..2026-12-24", "the end is not after the start"),
    ("2026-02-30", "invalid date"),
    ("2025-01-01..2027-01-01", "longer than 400 days"),
    ("a..b..c", "cannot read"),
    ("2026-11-22T10:00..noon", "cannot read the time 'noon'"),
])
def test_annotate_bad_ranges(filled_db, text, message):
    r = kiosk("annotate", text, "--closed", "--note", "x", "--db", filled_db)
    assert r.exit_code == 1 and message in r.output, r.output


def test_annotate_add_list_delete(filled_db):
    r = kiosk("annotate", "2026-12-24..2026-12-26", "--closed", "--note", "Christmas", "--db",
              filled_db)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == ("annotation #1: closed, whole site, Thu 2026-12-24 – "
                                "Sat 2026-12-26 (3 days): Christmas")
    r = kiosk("annotate", "2026-03-29", "--estimate", "--note", "counts from the register",
              "--sensor", "a", "--db", filled_db)
    assert r.exit_code == 0 and "Sun 2026-03-29 (23 h)" in r.output
    r = kiosk("annotate", "2026-12-25T10:00..2026-12-25T12:30", "--sensor-fault", "--note",
              "beam misaligned", "--sensor", "b", "--db", filled_db)
    assert r.exit_code == 0
    assert "Fri 2026-12-25 10:00 – 12:30 +02:00 (2.5 h)" in r.output
    assert "overlaps annotation #1" in r.stderr
    r = kiosk("annotate", "--list", "--db", filled_db)
    assert r.output.splitlines() == [
        "#2    estimate      a           Sun 2026-03-29 (23 h)  counts from the register",
        "#1    closed        whole site  Thu 2026-12-24 – Sat 2026-12-26 (3 days)  Christmas",
        "#3    sensor-fault  b           Fri 2026-12-25 10:00 – 12:30 +02:00 (2.5 h)  "
        "beam misaligned",
    ]
    r = kiosk("annotate", "--list", "--since", "2026-12-01", "--format", "json", "--db", filled_db)
    data = json.loads(r.output)
    assert [a["id"] for a in data] == [1, 3]
    assert data[0]["start"] == "2026-12-23T22:00:00Z" and data[0]["sensor_id"] is None
    assert data[0]["local_end"] == "2026-12-27T00:00:00+02:00"
    r = kiosk("annotate", "--delete", "3", "--db", filled_db)
    assert r.exit_code == 0 and r.output.startswith("deleted annotation #3: sensor-fault, b")
    r = kiosk("annotate", "--delete", "3", "--db", filled_db)
    assert r.exit_code == 1 and "no annotation #3 (it was deleted already)" in r.output
    assert "#3" not in kiosk("annotate", "--list", "--db", filled_db).output
    r = kiosk("log", "--db", filled_db, "--since", "1d", "--kind", "annotation")
    assert len(r.output.splitlines()) == 4
    assert "annotation #1 added: closed, whole site" in r.output
    assert "INFO     b  annotation #3 deleted: sensor-fault, b, Fri 2026-12-25 10:00" in r.output


def test_annotate_needs_one_kind_a_note_and_a_known_sensor(tmp_path, filled_db):
    r = kiosk("annotate", "2026-12-24", "--note", "x", "--db", filled_db)
    assert r.exit_code == 2 and "exactly one of --closed, --estimate, --sensor-fault" in r.output
    r = kiosk("annotate", "2026-12-24", "--closed", "--estimate", "--note", "x", "--db", filled_db)
    assert r.exit_code == 2
    r = kiosk("annotate", "2026-12-24", "--closed", "--db", filled_db)
    assert r.exit_code == 2 and "--note is required" in r.output
    r = kiosk("annotate", "2026-12-24", "--closed", "--note", "  ", "--db", filled_db)
    assert r.exit_code == 2
    r = kiosk("annotate", "2026-12-24", "--closed", "--note", "x", "--sensor", "c", "--db",
              filled_db)
    assert r.exit_code == 1 and "unknown sensor 'c'; this kiosk has a, b" in r.output
    r = kiosk("annotate", "--delete", "9", "--db", filled_db)
    assert r.exit_code == 1 and "no annotation #9" in r.output
    r = kiosk("annotate", "--list", "--db", filled_db)
    assert r.output.strip() == "no annotations"
    assert rows_of(filled_db, "SELECT count(*) FROM annotations") == [(0,)]


def test_flags_for_and_annotations_between(filled_db):
    store = Store.open(filled_db)
    runner = CliRunner()
    for args in (["2025-11-24", "--closed", "--note", "strike"],
                 ["2025-11-24T09:00..2025-11-24T09:30", "--sensor-fault", "--sensor", "a",
                  "--note", "beam"],
                 ["2025-11-25", "--estimate", "--note", "tmp"]):
        r = runner.invoke(cli, ["annotate", *args, "--db", str(filled_db)])
        assert r.exit_code == 0, r.output
    h = int(T0)  # 09:00–10:00 local
    assert flags_for(store, "a", h, h + 3600) == ["closed", "sensor-fault"]
    assert flags_for(store, "b", h, h + 3600) == ["closed"]
    assert flags_for(store, "a", h + 1800, h + 3600) == ["closed"]  # the fault ended at 09:30
    next_day = int(datetime(2025, 11, 25, tzinfo=HEL).timestamp())
    assert flags_for(store, "a", next_day - 3600, next_day) == ["closed"]
    assert flags_for(store, "a", next_day, next_day + 3600) == ["estimate"]
    assert kiosk("annotate", "--delete", "1", "--db", filled_db).exit_code == 0
    assert flags_for(store, "b", h, h + 3600) == []
    found = annotations_between(store, h, next_day + 3600)
    assert [(a["id"], a["kind"], a["sensor_id"], a["note"]) for a in found] == [
        (2, "sensor-fault", "a", "beam"), (3, "estimate", None, "tmp")]
    assert annotations_between(store, h, next_day + 3600, sensor_id="b") == [found[1]]
    store.close()


def test_readers_of_a_database_without_the_new_tables(tmp_path):
    """An old database opened read-only (not migrated): no annotations, no flags, no crash."""
    db = fill(tmp_path / "counts.db")
    conn = sqlite3.connect(db)
    conn.executescript("DROP TABLE annotations; DROP TABLE import_rows; DROP TABLE imports;"
                       "DROP INDEX counts_imported;"
                       "ALTER TABLE counts DROP COLUMN import_id;")
    conn.close()
    store = Store.open_reader(db)
    assert annotations_between(store, 0, 2**40) == []
    assert flags_for(store, "a", T0, T0 + 3600) == []
    assert imported_ranges(store) == []
    store.close()
    assert kiosk("annotate", "--list", "--db", db).output.strip() == "no annotations"


def test_help_texts():
    for name in ("log", "import", "annotate"):
        r = kiosk(name, "--help")
        assert r.exit_code == 0 and "Usage: " in r.output
        assert cli.commands[name].help



def test_import_and_log_beside_the_running_daemon(config_file, daemon, pty_feeder, tmp_path):
    """The real daemon counts (and journals a rejected line) while a year of history is
    imported in one transaction: nothing is lost, nothing is locked out."""
    cfg = config_file(f'[[sensors]]\nid = "door"\ntype = "serial"\nport = "{pty_feeder.link}"\n',
                      flush=0.5)
    db = tmp_path / "counts.db"
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.write(b"GARBAGE\n")
    pty_feeder.start(rate=400)
    year = [f"door,{datetime.fromtimestamp(T0 - 86400 * k, ZoneInfo('UTC')):%Y-%m-%dT%H:%M:%SZ},"
            f"{datetime.fromtimestamp(T0 - 86400 * k + 3600, ZoneInfo('UTC')):%Y-%m-%dT%H:%M:%SZ},"
            f"{k},1" for k in range(365, 0, -1)]
    f = write_csv(tmp_path / "history.csv", *year)
    r = kiosk("import", f, "--config", cfg)
    assert r.exit_code == 0, r.output
    assert "imported 365 row(s)" in r.output
    wait_for(lambda: "rejected a serial line" in kiosk("log", "--config", cfg).output,
             what="the rejected line in the journal")
    injected = pty_feeder.stop()
    assert d.terminate() == 0
    assert db_totals(db) == (injected + sum(range(1, 366)), 365)
    out = kiosk("log", "--config", cfg, "--since", "1h").output
    assert "INFO     -     kiosk " in out and "started" in out
    assert "WARNING  door  rejected a serial line: " in out and "sample: 'GARBAGE'" in out
    assert "INFO     -     imported 365 row(s) from history.csv" in out
    assert "INFO     -     stopping on SIGTERM" in out
    assert "database is locked" not in d.output()


def test_changed_ranges_for_the_uploader(filled_db, tmp_path):
    import time

    t = time.time() - 1
    assert kiosk("annotate", "2025-11-24", "--closed", "--note", "strike", "--sensor", "a",
                 "--db", filled_db).exit_code == 0
    f = write_csv(tmp_path / "old.csv", "b,2024-11-25T07:00:00Z,2024-11-25T08:00:00Z,1,1")
    assert kiosk("import", f, "--db", filled_db).exit_code == 0
    day = parse_range("2025-11-24", HEL, now=T0)
    with Store.open(filled_db) as store:
        assert changed_ranges(store, t) == [(None, 1732518000, 1732521600), ("a", *day)]
        later = time.time() + 1
        assert changed_ranges(store, later) == []
    assert kiosk("annotate", "--delete", "1", "--db", filled_db).exit_code == 0
    assert kiosk("import", "--undo", "1", "--db", filled_db).exit_code == 0
    with Store.open(filled_db) as store:
        assert changed_ranges(store, later - 1.5) == [(None, 1732518000, 1732521600),
                                                      ("a", *day)]


def test_undo_and_delete_do_not_create_a_database(tmp_path):
    missing = tmp_path / "missing.db"
    r = kiosk("import", "--undo", "1", "--db", missing)
    assert r.exit_code == 1 and "no database yet" in r.output and not missing.exists()
    r = kiosk("annotate", "--delete", "1", "--db", missing)
    assert r.exit_code == 1 and "no database yet" in r.output and not missing.exists()
    r = kiosk("log", "--db", missing)
    assert r.exit_code == 1 and "no database yet" in r.output and not missing.exists()


def test_import_reads_the_file_in_chunks_as_one_text(tmp_path):
    """The file is read 1 MiB at a time: a character split by a chunk, a BOM, \\r line
    ends and a byte that is not UTF-8 far into the file are all seen as in one piece."""
    start = int(datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp())
    parts = ["\ufeffsensor_id,start,end,in,out\r"]
    size = len(parts[0].encode())
    for k in range(30_000):
        if (1 << 20) - 60 <= size < (1 << 20):  # a blank line of no-break spaces (2 bytes
            pad = " " if ((1 << 20) - size) % 2 == 0 else ""  # each) across the boundary
            parts.append(pad + "\u00a0" * 40 + "\r")
            size += len(parts[-1].encode())
        parts.append(f"a,{iso(start + 900 * k)},{iso(start + 900 * (k + 1))},{k % 7},{k % 3}\r")
        size += len(parts[-1])
    data = "".join(parts).encode()
    assert data[(1 << 20) - 1:(1 << 20) + 1] == b"\xc2\xa0"  # the 1 MiB boundary splits one
    f = tmp_path / "mac.csv"
    f.write_bytes(data)
    db = tmp_path / "fresh.db"
    r = kiosk("import", f, "--db", db)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("imported 30000 row(s) from mac.csv (import #1): a, ")
    assert rows_of(db, "SELECT count(*), sum(in_count), max(start) FROM counts") == \
        [(30_000, sum(k % 7 for k in range(30_000)), start + 900 * 29_999)]
    # a byte that is not UTF-8 in the second chunk: its offset in the whole file
    bad = data[:1_400_000] + b"\xff" + data[1_400_000:]
    f.write_bytes(bad)
    r = kiosk("import", f, "--db", tmp_path / "other.db")
    assert r.exit_code == 1
    assert "the file is not UTF-8 text (byte 1400000); save it as CSV UTF-8" in r.output


def test_import_problems_of_every_kind_are_counted_and_the_first_shown_by_line(tmp_path):
    db = fill(tmp_path / "counts.db")
    rows = []
    for k in range(60):  # line 2 + 2k: good; 3 + 2k: its duplicate, or bad every fourth
        a = f"2024-11-{1 + k // 24:02d}T{k % 24:02d}:00:00Z"
        b = f"2024-11-{1 + k // 24:02d}T{k % 24:02d}:15:00Z"
        rows.append(f"a,{a},{b},1,1")
        rows.append(f"a,{a},{b},2,2" if k % 4 else f"a,{a},x,1,1")
    rows.append("a,2024-11-01T00:00:00Z,2024-11-01T01:00:00Z,1,1")  # line 122 overlaps 2
    rows.append("zz,2024-10-01T00:00:00Z,2024-10-01T00:15:00Z,1,1")  # line 123 unknown sensor
    rows.append("b,2025-11-24T08:00:00Z,2025-11-24T08:15:00Z,1,1")  # line 124 counted here
    f = write_csv(tmp_path / "f.csv", *rows)
    r = kiosk("import", f, "--db", db, "--dry-run")
    assert r.exit_code == 1
    err = [x.removeprefix("kiosk: error: ") for x in r.output.splitlines()]
    assert err[0] == f"{f}: 63 problems in 123 row(s); nothing was imported"
    assert [int(x.split()[1].rstrip(":")) for x in err[1:51]] == list(range(3, 103, 2))
    assert err[1] == "line 3: cannot read the time 'x' (expected e.g. 2026-11-22T07:00:00Z)"
    assert err[2] == "line 5: duplicate of line 4 (a 2024-11-01T01:00:00Z)"
    assert err[51] == "… and 13 more"
    # the ones past the first 50 are there when the first are fixed
    write_csv(f, *rows[120:])
    r = kiosk("import", f, "--db", db)
    assert r.exit_code == 1 and "2 problems in 3 row(s)" in r.output
    assert "line 3: unknown sensor 'zz'" in r.output
    assert "line 4: b 2025-11-24T08:00:00Z..2025-11-24T08:15:00Z overlaps counts" in r.output
    write_csv(f, rows[0], rows[2], "a,2024-10-31T23:00:00Z,2024-11-01T01:00:00Z,1,1")
    r = kiosk("import", f, "--db", db)
    assert r.exit_code == 1 and "1 problem in 3 row(s)" in r.output
    assert "line 2: a 2024-11-01T00:00:00Z..2024-11-01T00:15:00Z overlaps line 4 " \
           "(2024-10-31T23:00:00Z..2024-11-01T01:00:00Z)" in r.output
    assert rows_of(db, "SELECT count(*) FROM imports") == [(0,)]


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
