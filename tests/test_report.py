"""``kiosk report``: local days across DST, figures of a real service centre's press
release, comparisons, averages, the visits definition, every format and the command."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from kiosk.cli import KioskGroup
from kiosk.cli.report import report_command
from kiosk.periods import local_midnight
from kiosk.report.compute import DEFINITIONS, SITE, build_report, parse_report_date
from kiosk.report.html import BAR, render_html
from kiosk.report.text import BLOCKS, render_csv, render_json, render_table
from kiosk.store import Store

TZ = ZoneInfo("Europe/Helsinki")
LATER = datetime(2027, 6, 1, tzinfo=TZ).timestamp()  # "now" after every span tested


def make_store(path: Path, rows: list[tuple[str, int, int, int]],
               runs: list[tuple[float, float]] = ()) -> Store:
    """A database with (sensor_id, start, in, out) count rows and finished runs."""
    store = Store.open(path)
    with store.write() as conn:
        conn.executemany("INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                         " VALUES (?, ?, ?, ?, 0)", rows)
        conn.executemany("INSERT INTO runs (started_at, last_seen, stopped_at, pid, version,"
                         " stop_reason) VALUES (?, ?, ?, 1, 'test', 'stop')",
                         [(a, b, b) for a, b in runs])
    return store


def day_range(d: date) -> range:
    return range(local_midnight(d, TZ), local_midnight(d + timedelta(days=1), TZ), 900)


def add_annotation(store: Store, start: float, end: float, kind: str, note: str,
                   sensor_id: str | None = None) -> None:
    """An annotation row (the table comes from `kiosk annotate`; made here if it is missing)."""
    with store.write() as conn:
        if not store.db["annotations"].exists():
            conn.execute("CREATE TABLE annotations (id INTEGER PRIMARY KEY, start INTEGER NOT NULL,"
                         " end INTEGER NOT NULL, sensor_id TEXT, kind TEXT NOT NULL,"
                         " note TEXT NOT NULL, created_at REAL NOT NULL, deleted_at REAL)")
        conn.execute("INSERT INTO annotations (start, end, sensor_id, kind, note, created_at)"
                     " VALUES (?, ?, ?, ?, ?, 0)", (int(start), int(end), sensor_id, kind, note))


# -- DST --------------------------------------------------------------------------------------

@pytest.fixture
def dst_store(tmp_path):
    rows = [("door", t, 1, 1) for d in (date(2026, 3, 29), date(2026, 10, 25)) for t in day_range(d)]
    with make_store(tmp_path / "dst.db", rows) as store:
        yield store


def test_spring_dst_day_has_23_hours(dst_store):
    r = build_report(dst_store, span="day", date=date(2026, 3, 29), tz=TZ, now=LATER)
    assert len(r["rows"]) == 23
    hours = [x["hour"] for x in r["rows"]]
    assert 3 not in hours and hours[:4] == [0, 1, 2, 4]
    assert [x["utc_offset"] for x in r["rows"][:4]] == ["+02:00", "+02:00", "+02:00", "+03:00"]
    assert all(x["visits"] == 4 for x in r["rows"])
    assert r["totals"]["visits"] == 92 == sum(x["visits"] for x in r["rows"])
    assert r["start"] == "2026-03-29T00:00:00+02:00" and r["end"] == "2026-03-30T00:00:00+03:00"
    assert any("23 hours" in n for n in r["notes"])


def test_autumn_dst_day_has_25_hours_with_two_three_oclocks(dst_store):
    r = build_report(dst_store, span="day", date=date(2026, 10, 25), tz=TZ, now=LATER)
    assert len(r["rows"]) == 25
    threes = [x for x in r["rows"] if x["hour"] == 3]
    assert [x["utc_offset"] for x in threes] == ["+03:00", "+02:00"]
    assert [x["label"] for x in threes] == ["03:00 +03:00", "03:00 +02:00"]
    assert threes[0]["start"] == "2026-10-25T03:00:00+03:00"
    assert threes[1]["start"] == "2026-10-25T03:00:00+02:00"
    assert all(x["visits"] == 4 for x in r["rows"])
    assert r["totals"]["visits"] == 100
    table = render_table(r)
    assert "03:00 +03:00" in table and "03:00 +02:00" in table
    assert r["comparison"]["description"] == "same weekday a week earlier"
    assert r["comparison"]["label"] == "Sunday 18.10.2026" and r["comparison"]["visits"] is None


def test_week_across_dst_counts_each_local_day(dst_store):
    r = build_report(dst_store, span="week", date=date(2026, 10, 25), tz=TZ, now=LATER)
    assert [x["label"] for x in r["rows"]][-1] == "Sun 25.10."
    assert r["rows"][-1]["visits"] == 100 and r["rows"][0]["visits"] is None
    assert r["totals"]["visits"] == 100 and r["days_with_data"] == 1


# -- the press release: 1,546,133 visits in 2019, about 6 % more than in 2018 -------------

BUSIEST_DAY = date(2019, 11, 14)   # a Thursday; 5,999 visits, 1,200 of them 14:00-15:00
BUSIEST_DAY_VISITS = 5_999
BUSIEST_HOUR_VISITS = 1_200
YEAR_TOTALS = {2018: 1_458_616, 2019: 1_546_133}


@dataclass
class PressRelease:
    path: Path
    daily: dict[date, int]                                      # site visits per local day
    buckets: list[tuple[str, int, int, int]] = field(default_factory=list)

    def between(self, lo: float, hi: float) -> int:
        return sum(i for _s, t, i, _o in self.buckets if lo <= t < hi)

    def days(self, first: date, n: int) -> int:
        return sum(self.daily[first + timedelta(days=k)] for k in range(n))


def _spread(total: int, weights: list[float]) -> list[int]:
    """``total`` split by weights into integers that add up exactly (cumulative rounding)."""
    cum, acc, out = 0.0, 0, []
    s = sum(weights)
    for w in weights:
        cum += w
        nxt = round(total * cum / s)
        out.append(nxt - acc)
        acc = nxt
    return out


def press_release_days() -> dict[date, int]:
    rng = random.Random(2019)
    daily: dict[date, int] = {}
    for year, (weekday_lo, weekday_hi, weekend_lo, weekend_hi) in (
            (2018, (4_700, 4_920, 1_850, 2_050)), (2019, (5_000, 5_250, 1_900, 2_100))):
        days = [date(year, 1, 1) + timedelta(days=k) for k in range((date(year + 1, 1, 1)
                                                                     - date(year, 1, 1)).days)]
        for d in days:
            daily[d] = (rng.randint(weekend_lo, weekend_hi) if d.weekday() >= 5
                        else rng.randint(weekday_lo, weekday_hi))
        if year == 2019:
            daily[BUSIEST_DAY] = BUSIEST_DAY_VISITS
        adjustable = [d for d in days if d.weekday() < 5 and d != BUSIEST_DAY]
        diff = YEAR_TOTALS[year] - sum(daily[d] for d in days)
        for k, d in enumerate(adjustable):
            daily[d] += diff // len(adjustable) + (k < diff % len(adjustable))
        assert sum(daily[d] for d in days) == YEAR_TOTALS[year]
    assert all(5_000 <= v < BUSIEST_DAY_VISITS for d, v in daily.items()
               if d.year == 2019 and d.weekday() < 5 and d != BUSIEST_DAY)
    return daily


def press_release_buckets(daily: dict[date, int]) -> list[tuple[str, int, int, int]]:
    """Visits in opening hours (weekdays 8-20, weekends 10-18 local), north 55 %, south 45 %."""
    rows = []
    for d, total in daily.items():
        open_h, close_h = (8, 20) if d.weekday() < 5 else (10, 18)
        starts = [int(datetime(d.year, d.month, d.day, h, m, tzinfo=TZ).timestamp())
                  for h in range(open_h, close_h) for m in (0, 15, 30, 45)]
        n = len(starts)
        weights = [1.0 + min(k, n - 1 - k) for k in range(n)]
        if d == BUSIEST_DAY:  # a planted event: 1,200 visits between 14:00 and 15:00
            peak = [k for k, t in enumerate(starts) if datetime.fromtimestamp(t, TZ).hour == 14]
            per_bucket = {k: BUSIEST_HOUR_VISITS // 4 for k in peak}
            rest = _spread(total - BUSIEST_HOUR_VISITS, [0 if k in per_bucket else w
                                                         for k, w in enumerate(weights)])
            visits = [per_bucket.get(k, v) for k, v in enumerate(rest)]
        else:
            visits = _spread(total, weights)
        for t, v in zip(starts, visits, strict=True):
            north = round(v * 0.55)
            rows.append(("north", t, north, north // 3))
            rows.append(("south", t, v - north, (v - north) // 3))
    return rows


@pytest.fixture(scope="session")
def press(tmp_path_factory) -> PressRelease:
    daily = press_release_days()
    pr = PressRelease(tmp_path_factory.mktemp("press") / "counts.db", daily,
                      press_release_buckets(daily))
    runs = [(local_midnight(date(2018, 1, 1), TZ), local_midnight(date(2020, 1, 1), TZ))]
    make_store(pr.path, pr.buckets, runs).close()
    return pr


@pytest.fixture
def press_store(press):
    with Store.open_reader(press.path) as store:
        yield store


def round_half_up(numer: int, denom: int) -> int:
    return (2 * numer + denom) // (2 * denom)


def test_year_2019_matches_the_press_release(press, press_store):
    r = build_report(press_store, span="year", date=date(2019, 6, 1), tz=TZ, now=LATER)
    assert r["label"] == "2019" and r["row_unit"] == "month" and len(r["rows"]) == 12
    assert r["totals"]["visits"] == 1_546_133
    assert sum(x["visits"] for x in r["rows"]) == 1_546_133
    assert sum(r["totals"]["by_sensor"].values()) == 1_546_133
    assert r["rows"][10]["label"] == "November"
    assert r["rows"][10]["visits"] == press.days(date(2019, 11, 1), 30)
    c = r["comparison"]
    assert c["description"] == "previous year" and c["label"] == "2018"
    assert c["visits"] == 1_458_616 and c["change"] == 87_517 and c["change_pct"] == 6.0
    assert r["days_with_data"] == r["days"] == 365

    weekdays = [v for d, v in press.daily.items() if d.year == 2019 and d.weekday() < 5]
    weekends = [v for d, v in press.daily.items() if d.year == 2019 and d.weekday() >= 5]
    avg = r["averages"]
    assert avg["weekday"]["days"] == 261 and avg["weekend"]["days"] == 104
    assert avg["weekday"]["visits"] == round_half_up(sum(weekdays), 261)
    assert 5_000 <= avg["weekday"]["visits"] <= 6_000
    assert avg["weekend"]["visits"] == round_half_up(sum(weekends), 104)
    assert abs(avg["weekend"]["visits"] - 2_000) <= 50
    assert avg["by_weekday"]["Saturday"]["days"] == 52

    assert r["busiest_day"] == {"date": "2019-11-14", "label": "Thursday 14.11.2019",
                                "visits": BUSIEST_DAY_VISITS}
    assert r["busiest_hour"]["start"] == "2019-11-14T14:00:00+02:00"
    assert r["busiest_hour"]["visits"] == BUSIEST_HOUR_VISITS

    table = render_table(r)
    assert "1,546,133" in table and "1,458,616" in table and "+6.0 %" in table
    assert "Busiest day: Thursday 14.11.2019, 5,999 visits" in table
    assert "Busiest hour: Thursday 14.11.2019 14:00–15:00 (+02:00), 1,200 visits" in table
    assert "█" in table


def test_year_2018_has_no_earlier_year(press_store):
    r = build_report(press_store, span="year", date=date(2018, 3, 3), tz=TZ, now=LATER)
    assert r["totals"]["visits"] == 1_458_616
    assert r["comparison"]["visits"] is None and r["comparison"]["change_pct"] is None
    assert "no counts" in render_table(r)


def test_year_in_progress_compares_the_same_part_of_last_year(press, press_store):
    now = datetime(2019, 11, 14, 12, 0, tzinfo=TZ).timestamp()
    r = build_report(press_store, span="year", date=date(2019, 1, 1), tz=TZ, now=now)
    assert r["in_progress"] and r["until"] == "2019-11-14T12:00:00+02:00"
    lo19, lo18 = local_midnight(date(2019, 1, 1), TZ), local_midnight(date(2018, 1, 1), TZ)
    cut18 = datetime(2018, 11, 14, 12, 0, tzinfo=TZ).timestamp()
    assert r["totals"]["visits"] == press.between(lo19, now)
    c = r["comparison"]
    assert c["partial"] and c["until"] == "2018-11-14T12:00:00+02:00"
    assert c["visits"] == press.between(lo18, cut18)
    assert c["change_pct"] == round((press.between(lo19, now) - c["visits"]) * 100 / c["visits"], 1)
    assert r["averages"]["weekday"]["days"] == len(
        [d for d in press.daily if d.year == 2019 and d < date(2019, 11, 14) and d.weekday() < 5])
    assert r["rows"][11]["visits"] is None  # December has not come yet
    assert any("In progress" in n for n in r["notes"])


def test_month_report_has_a_row_per_day_and_compares_a_year_back(press, press_store):
    r = build_report(press_store, span="month", date=date(2019, 2, 14), tz=TZ, now=LATER)
    assert r["label"] == "February 2019" and len(r["rows"]) == 28
    assert r["rows"][0]["label"] == "Fri 1.2." and r["rows"][0]["date"] == "2019-02-01"
    assert [x["visits"] for x in r["rows"]] == [press.daily[date(2019, 2, 1) + timedelta(days=k)]
                                                for k in range(28)]
    assert r["totals"]["visits"] == press.days(date(2019, 2, 1), 28)
    same, prev = r["comparisons"]
    assert same["description"] == "same month a year earlier" and same["label"] == "February 2018"
    assert same["visits"] == press.days(date(2018, 2, 1), 28)
    assert prev["description"] == "previous month" and prev["label"] == "January 2019"
    assert prev["visits"] == press.days(date(2019, 1, 1), 31)
    jan = build_report(press_store, span="month", date=date(2019, 1, 31), tz=TZ, now=LATER)
    assert len(jan["rows"]) == 31 and jan["comparisons"][1]["label"] == "December 2018"


def test_week_report_starts_monday_and_compares_the_previous_week(press, press_store):
    r = build_report(press_store, span="week", date=date(2019, 11, 14), tz=TZ, now=LATER)
    assert r["label"] == "week 46/2019 (11.11.–17.11.2019)" and r["key"] == "2019-W46"
    assert [x["weekday"] for x in r["rows"]] == ["Monday", "Tuesday", "Wednesday", "Thursday",
                                                 "Friday", "Saturday", "Sunday"]
    assert r["totals"]["visits"] == press.days(date(2019, 11, 11), 7)
    c = r["comparison"]
    assert c["description"] == "previous week" and c["label"].startswith("week 45/2019")
    assert c["visits"] == press.days(date(2019, 11, 4), 7)
    assert c["change"] == r["totals"]["visits"] - c["visits"]
    assert r["comparisons"][1]["label"] == "week 46/2018 (12.11.–18.11.2018)"
    assert r["busiest_day"]["date"] == "2019-11-14"
    assert r["averages"]["weekend"]["visits"] == round_half_up(
        press.daily[date(2019, 11, 16)] + press.daily[date(2019, 11, 17)], 2)


def test_day_report_compares_the_same_weekday_a_week_earlier(press, press_store):
    r = build_report(press_store, span="day", date=BUSIEST_DAY, tz=TZ, now=LATER)
    assert r["label"] == "Thursday 14.11.2019" and len(r["rows"]) == 24
    assert r["rows"][14]["visits"] == BUSIEST_HOUR_VISITS and r["rows"][3]["visits"] == 0
    assert r["comparison"]["label"] == "Thursday 7.11.2019"
    assert r["comparison"]["visits"] == press.daily[date(2019, 11, 7)]
    assert r["comparisons"][1]["label"] == "Wednesday 13.11.2019"
    assert r["busiest_hour"]["label"].startswith("Thursday 14.11.2019 14:00–15:00")


def test_sensor_filter(press, press_store):
    r = build_report(press_store, span="year", date=date(2019, 1, 1), tz=TZ, now=LATER,
                     sensors=["south"])
    assert r["sensors"] == ["south"]
    lo, hi = local_midnight(date(2019, 1, 1), TZ), local_midnight(date(2020, 1, 1), TZ)
    assert r["totals"]["visits"] == sum(i for s, t, i, _o in press.buckets
                                        if s == "south" and lo <= t < hi)
    with pytest.raises(Exception, match="no counts for sensor west"):
        build_report(press_store, span="year", date=date(2019, 1, 1), tz=TZ, sensors=["west"])


def test_html_year_report_is_self_contained(press_store):
    r = build_report(press_store, span="year", date=date(2019, 1, 1), tz=TZ, now=LATER)
    html = render_html(r)
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html and "url(" not in html
    assert html.count("<svg") == 2  # the months, and a typical day by hour
    month_chart = html.split("<svg")[1]
    assert month_chart.count("</title></rect>") == len(r["rows"]) == 12
    assert "<title>November: " in html and "1,546,133" in html and "+6.0 %" in html
    assert DEFINITIONS["in"].replace("'", "&#x27;") in html


# -- the visits definition ---------------------------------------------------------------------

@pytest.fixture
def single_beam(tmp_path):
    d = date(2026, 11, 24)
    at = {h: int(datetime(2026, 11, 24, h, tzinfo=TZ).timestamp()) for h in (10, 11, 12)}
    rows = [("beam", at[10], 1, 0), ("beam", at[11], 1, 0),
            ("beam", at[12], 3, 2), ("beam", at[12] + 900, 3, 2)]
    with make_store(tmp_path / "beam.db", rows, [(local_midnight(d, TZ), at[12] + 3600)]) as store:
        yield store


def test_in_plus_out_halves_each_figure_from_its_own_sums(single_beam):
    r = build_report(single_beam, span="day", date=date(2026, 11, 24), tz=TZ, now=LATER,
                     visits="in+out/2")
    rows = {x["hour"]: x["visits"] for x in r["rows"]}
    # 10:00: (1+0)/2 = 0.5 -> 1; 11:00 likewise; 12:00: (3+2+3+2)/2 = 5
    assert rows[10] == 1 and rows[11] == 1 and rows[12] == 5
    # the total is (2 + 10) / 2 = 6 from the summed counts, not 1 + 1 + 5
    assert r["totals"]["visits"] == 6 and r["totals"]["in"] == 8 and r["totals"]["out"] == 4
    assert rows[9] == 0 and rows[13] is None  # counter running but quiet / counter stopped
    assert r["definition"] == DEFINITIONS["in+out/2"] and "rounded half up" in r["definition"]
    plain = build_report(single_beam, span="day", date=date(2026, 11, 24), tz=TZ, now=LATER)
    assert plain["totals"]["visits"] == 8 and plain["definition"] == DEFINITIONS["in"]


@pytest.mark.parametrize("visits", ["in", "in+out/2"])
def test_the_definition_is_stated_in_every_format(single_beam, visits):
    r = build_report(single_beam, span="week", date=date(2026, 11, 24), tz=TZ, now=LATER,
                     visits=visits)
    text = DEFINITIONS[visits]
    assert text in render_table(r)
    assert f"# {text}" in render_csv(r)
    assert json.loads(render_json(r))["definition"] == text
    assert text.replace("'", "&#x27;") in render_html(r)


# -- formats -----------------------------------------------------------------------------------

def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO("".join(line for line in text.splitlines(True)
                                                   if not line.startswith("#")))))


def test_csv_and_json_parse(press_store):
    r = build_report(press_store, span="week", date=date(2019, 11, 14), tz=TZ, now=LATER)
    rows = _csv_rows(render_csv(r))
    assert list(rows[0]) == ["label", "start", "end", "sensor_id", "visits", "coverage",
                             "imported", "notes"]
    assert {x["coverage"] for x in rows} == {"1"} and {x["imported"] for x in rows} == {""}
    assert len(rows) == 7 * 3
    site = [x for x in rows if x["sensor_id"] == SITE]
    assert [int(x["visits"]) for x in site] == [x["visits"] for x in r["rows"]]
    assert sum(int(x["visits"]) for x in rows if x["sensor_id"] != SITE) == r["totals"]["visits"]
    assert site[3]["start"] == "2019-11-14T00:00:00+02:00"
    data = json.loads(render_json(r))
    assert data["totals"]["visits"] == r["totals"]["visits"] and len(data["rows"]) == 7


def test_table_has_a_bar_chart_scaled_to_the_largest_row(press_store):
    r = build_report(press_store, span="week", date=date(2019, 11, 14), tz=TZ, now=LATER)
    lines = render_table(r).splitlines()
    bars = {line.split()[0] + line.split()[1]: len(line.split()[-1]) for line in lines
            if re.match(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d", line)}
    assert bars["Thu14.11."] == 30 and 5 <= bars["Sat16.11."] < 15
    assert set("".join(lines)) & set(BLOCKS)


def test_empty_database_says_there_are_no_counts(tmp_path):
    with make_store(tmp_path / "empty.db", []) as store:
        for span in ("day", "week", "month", "year"):
            r = build_report(store, span=span, date=date(2026, 11, 24), tz=TZ, now=LATER)
            assert not r["has_data"] and r["totals"]["visits"] == 0
            assert r["busiest_day"] is None and r["busiest_hour"] is None
            assert all(x["visits"] is None for x in r["rows"])
            assert any(n.startswith("No counts") for n in r["notes"])
            assert "No counts" in render_table(r) and "No counts" in render_html(r)
            assert json.loads(render_json(r))["has_data"] is False
            assert len(_csv_rows(render_csv(r))) == len(r["rows"])


def test_a_span_not_started_yet(press_store):
    r = build_report(press_store, span="day", date=date(2019, 12, 1), tz=TZ,
                     now=datetime(2019, 11, 30, 10, tzinfo=TZ).timestamp())
    assert r["not_started"] and not r["has_data"] and r["comparison"]["visits"] is None
    assert "has not started" in render_table(r)


def test_annotations_appear_in_every_format(tmp_path):
    d = date(2026, 11, 24)
    rows = [("door", t, 10, 0) for k in range(7) for t in day_range(d + timedelta(days=k - 1))]
    store = make_store(tmp_path / "notes.db", rows)
    add_annotation(store, local_midnight(d, TZ), local_midnight(d + timedelta(days=1), TZ),
                   "closed", "Staff training day")
    add_annotation(store, local_midnight(d, TZ) + 3600 * 10, local_midnight(d, TZ) + 3600 * 12,
                   "sensor-fault", "Beam misaligned", "door")
    add_annotation(store, local_midnight(date(2026, 1, 1), TZ),
                   local_midnight(date(2026, 1, 2), TZ), "closed", "New Year")
    store.close()
    with Store.open_reader(tmp_path / "notes.db") as store:
        r = build_report(store, span="week", date=d, tz=TZ, now=LATER)
    assert [a["note"] for a in r["annotations"]] == ["Staff training day", "Beam misaligned"]
    assert r["annotations"][1]["sensor_id"] == "door" and r["annotations"][0]["sensor_id"] is None
    # the closed Tuesday is left out of the averages: 4 weekdays of 960 remain
    assert r["averages"]["excluded_closed_days"] == ["2026-11-24"]
    assert r["averages"]["weekday"] == {"visits": 960, "days": 4}
    for text in (render_table(r), render_csv(r), render_json(r), render_html(r)):
        assert "Staff training day" in text and "Beam misaligned" in text and "New Year" not in text
        assert "sensor-fault" in text


def test_report_dates():
    now = datetime(2026, 11, 24, 12, tzinfo=TZ).timestamp()
    assert parse_report_date(None, "day", TZ, now=now) == date(2026, 11, 24)
    assert parse_report_date("yesterday", "day", TZ, now=now) == date(2026, 11, 23)
    assert parse_report_date("2026-11", "month", TZ, now=now) == date(2026, 11, 1)
    assert parse_report_date("2026", "year", TZ, now=now) == date(2026, 1, 1)
    assert parse_report_date("2026-W48", "week", TZ, now=now) == date(2026, 11, 23)
    for text, span in (("2026", "day"), ("2026-11", "week"), ("2026-13-40", "day"), ("soon", "year")):
        with pytest.raises(Exception, match=re.escape(text)):
            parse_report_date(text, span, TZ, now=now)


def test_week_labels_across_the_new_year(tmp_path):
    with make_store(tmp_path / "e.db", []) as store:
        r = build_report(store, span="week", date=date(2026, 1, 1), tz=TZ, now=LATER)
    assert r["label"] == "week 1/2026 (29.12.2025–4.1.2026)" and r["key"] == "2026-W01"


# -- the HTML page in a real browser -------------------------------------------------------------

def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, standard library only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i:i + 3]) for r in rows for i in range(0, stride, bpp)]


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                    "(apt-get install chromium) - the HTML report is not rendered in a browser")
def test_html_report_renders_in_headless_chromium(press_store, tmp_path):
    r = build_report(press_store, span="month", date=date(2019, 11, 1), tz=TZ, now=LATER)
    page = tmp_path / "report.html"
    page.write_text(render_html(r), encoding="utf-8")
    png = tmp_path / "shot.png"
    out = subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
         "--window-size=1200,900", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert png.exists(), f"no screenshot: {out.returncode} {out.stderr[-2000:]}"
    assert png.stat().st_size > 10_000
    width, height, pixels = _png_pixels(png)
    assert (width, height) == (1200, 900)
    bar = bytes.fromhex(BAR[1:])
    near = sum(1 for p in pixels if all(abs(a - b) <= 6 for a, b in zip(p, bar, strict=True)))
    assert near > 5_000, f"only {near} pixels of the bar colour: the chart is not drawn"
    assert len(set(pixels)) > 50, "the page looks blank"


# -- the command -----------------------------------------------------------------------------------

@pytest.fixture
def kiosk(monkeypatch):
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    group = KioskGroup(name="kiosk", commands={"report": report_command})

    def run(*args: str):
        return CliRunner().invoke(group, list(args), obj={})
    return run


def test_command_has_help(kiosk):
    assert report_command.help and report_command.name == "report"
    r = kiosk("report", "--help")
    assert r.exit_code == 0 and "Usage: " in r.output and "DATE" in r.output


def test_command_formats(kiosk, press):
    db = str(press.path)
    r = kiosk("report", "year", "2019", "--db", db)
    assert r.exit_code == 0, r.output
    assert "1,546,133" in r.stdout and "+6.0 %" in r.stdout and DEFINITIONS["in"] in r.stdout
    r = kiosk("report", "month", "2019-11", "--db", db, "--format", "csv")
    assert r.exit_code == 0 and len(_csv_rows(r.stdout)) == 30 * 3
    r = kiosk("report", "week", "2019-11-14", "--db", db, "--format", "json", "--sensor", "north")
    data = json.loads(r.stdout)
    assert data["sensors"] == ["north"] and data["label"].startswith("week 46/2019")
    r = kiosk("report", "day", "2019-11-14", "--db", db, "--format", "json", "--visits", "in+out/2")
    data = json.loads(r.stdout)
    assert data["visits"] == "in+out/2" and data["totals"]["visits"] == round_half_up(
        data["totals"]["in"] + data["totals"]["out"], 2)


def test_command_writes_html_files(kiosk, press, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = kiosk("report", "year", "2019", "--db", str(press.path), "--format", "html")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "kiosk-report-year-2019.html"
    assert "<svg" in (tmp_path / "kiosk-report-year-2019.html").read_text()
    r = kiosk("report", "month", "2019-02-10", "--db", str(press.path), "--format", "csv",
              "--output", str(tmp_path / "feb.csv"))
    assert r.exit_code == 0 and len(_csv_rows((tmp_path / "feb.csv").read_text())) == 28 * 3


@pytest.mark.parametrize("args", [("day", "2026-13-45"), ("year", "next"), ("day", "2026")])
def test_command_bad_date_is_one_line(kiosk, press, args):
    r = kiosk("report", *args, "--db", str(press.path))
    assert r.exit_code == 2  # a usage error
    assert r.stderr.startswith("kiosk: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


def test_command_without_database_is_one_line(kiosk, tmp_path):
    r = kiosk("report", "day", "--db", str(tmp_path / "none.db"))
    assert r.exit_code == 1 and r.stderr.startswith("kiosk: error: ")
    assert r.stderr.count("\n") == 1
