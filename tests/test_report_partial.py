"""Reports on partial data: every kind of partial span compared like for like, and time that
was not counted reads "–" (not 0) in the table, CSV, JSON and HTML.

The databases are real SQLite files with ``runs`` records as the daemon writes them; the
imported history comes in through the real ``kiosk import`` command.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from kiosk.cli import cli
from kiosk.periods import local_midnight, totals
from kiosk.report.compute import build_report
from kiosk.report.html import BAR, BAR_IMPORTED, MARK, NOT_COUNTED, render_html
from kiosk.report.text import render_csv, render_json, render_table
from kiosk.store import Store

TZ = ZoneInfo("Europe/Helsinki")
LATER = datetime(2027, 6, 1, tzinfo=TZ).timestamp()
SHOTS = Path(__file__).parent.parent / ".screenshots"  # kept for a person to look at


def at(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, m, d, h, mi, tzinfo=TZ).timestamp())


def open_hours(d: date, per_bucket: int, *, since: int = 0, until: int = 2**40,
               hours: range = range(8, 20)) -> list[tuple[str, int, int, int]]:
    """(sensor, start, in, out) rows: ``per_bucket`` visits each quarter hour of ``hours``."""
    return [("door", t, per_bucket, 0) for h in hours for m in (0, 15, 30, 45)
            if since <= (t := at(d.year, d.month, d.day, h, m)) < until]


def make_db(path: Path, rows: list[tuple[str, int, int, int]],
            runs: list[tuple[float, float, bool]]) -> Path:
    """Count rows and runs (start, last seen, stopped?) as the daemon leaves them."""
    with Store.open(path) as store, store.write() as conn:
        conn.executemany("INSERT INTO counts (sensor_id, start, in_count, out_count, updated_at)"
                         " VALUES (?, ?, ?, ?, 0)", rows)
        conn.executemany("INSERT INTO runs (started_at, last_seen, stopped_at, pid, version,"
                         " stop_reason) VALUES (?, ?, ?, 1, 't', ?)",
                         [(a, b, b if stopped else None, "SIGTERM" if stopped else None)
                          for a, b, stopped in runs])
    return path


def report(path: Path, span: str, d: date, now: float = LATER) -> dict:
    with Store.open_reader(path) as store:
        return build_report(store, span=span, date=d, tz=TZ, now=now)


def csv_site_rows(text: str) -> list[dict[str, str]]:
    body = "".join(line for line in text.splitlines(True) if not line.startswith("#"))
    return [r for r in csv.DictReader(io.StringIO(body)) if r["sensor_id"] == "(site)"]


# -- a counter started mid-day --------------------------------------------------------------------

@pytest.fixture
def midday(tmp_path) -> Path:
    return make_midday(tmp_path)


def make_midday(tmp_path: Path) -> Path:
    """Mon 30.11.2026 counted all day; the counter then off until Tue 1.12. 16:18, and
    counting on until Wed 2.12. ends.  100 visits an hour 08-20 (25 a quarter hour)."""
    start = at(2026, 12, 1, 16, 18)
    rows = [*open_hours(date(2026, 11, 30), 25),
            ("door", at(2026, 12, 1, 16, 15), 20, 0),  # 16:18-16:30 of that quarter hour
            *open_hours(date(2026, 12, 1), 25, since=at(2026, 12, 1, 16, 30)),
            *open_hours(date(2026, 12, 2), 25)]
    return make_db(tmp_path / "midday.db", rows,
                   [(at(2026, 11, 30), at(2026, 12, 1), True), (start, at(2026, 12, 3), True)])


def test_a_day_started_mid_day_is_compared_over_the_hours_it_was_counted(midday):
    r = report(midday, "day", date(2026, 12, 1))
    assert r["totals"]["visits"] == 20 + 14 * 25
    hours = {x["hour"]: x for x in r["rows"]}
    assert all(hours[h]["visits"] is None for h in range(16))  # not counted: not 0
    assert hours[16]["visits"] == 70 and hours[16]["coverage"] == pytest.approx(0.7)
    assert hours[17]["visits"] == 100 and hours[21]["visits"] == 0  # counted, nobody came
    week_ago, prev_day = r["comparisons"]
    assert week_ago["visits"] is None and week_ago["reason"] == "no counts"
    # the 16:15 quarter hour was counted for 12 of 15 minutes: left out on both sides
    assert prev_day["compared"] == "Tue 1.12. 16:30–24:00 against the same hours of Mon 30.11."
    assert prev_day["visits"] == prev_day["current_visits"] == 14 * 25
    assert prev_day["change"] == 0 and prev_day["change_pct"] == 0.0
    assert not prev_day["like_for_like"]
    table = render_table(r)
    assert ("Previous day (Monday 30.11.2026): Tue 1.12. 16:30–24:00 against the same hours of "
            "Mon 30.11.: 350 → 350 (±0 %)") in table
    assert "counted 70 %" in table and "32 % of the day counted" in table
    line = next(x for x in table.splitlines() if x.startswith("09:00"))
    assert line.split()[2] == "–" and "not counted" in line
    assert "against the" not in render_html(r).split('class="big"')[1].split("</p>")[0]


def test_the_next_day_is_not_compared_with_a_few_hours(midday):
    r = report(midday, "day", date(2026, 12, 2))
    assert r["totals"]["visits"] == 1200 and r["coverage"] == 1.0
    prev_day = r["comparisons"][1]
    assert prev_day["change_pct"] is None and prev_day["visits"] is None
    assert prev_day["reason"].startswith("too little overlap: Tuesday 1.12.2026 was counted")
    assert "%" not in render_table(r).split("Previous day (")[1].splitlines()[0]


def test_averages_and_the_typical_day_leave_out_the_partly_counted_day(midday):
    now = at(2026, 12, 3, 10)
    r = report(midday, "week", date(2026, 12, 1), now=now)
    assert r["averages"]["weekday"] == {"visits": 1200, "days": 2}  # Mon and Wed
    assert r["averages"]["excluded_partly_counted_days"] == ["2026-12-01"]
    wd = {x["hour"]: x for x in r["typical_day"]["weekday"]}
    assert wd[9] == {"hour": 9, "visits": 100, "days": 2}
    assert wd[17] == {"hour": 17, "visits": 100, "days": 3}  # Tue's 17:00 was counted in full
    assert wd[16]["days"] == 2 and wd[3] == {"hour": 3, "visits": 0, "days": 2}
    rows = {x["date"]: x for x in r["rows"]}
    assert rows["2026-12-03"]["visits"] is None and not rows["2026-12-03"]["future"]
    assert rows["2026-12-04"]["future"] and rows["2026-12-04"]["visits"] is None
    table = render_table(r)
    assert "A typical day" in table and "weekday (3 days)" in table
    html = render_html(r)
    assert "A typical day" in html and html.count("<svg") == 2


# -- a stopped counter ----------------------------------------------------------------------------

@pytest.fixture
def stopped(tmp_path) -> Path:
    return make_stopped(tmp_path)


def make_stopped(tmp_path: Path) -> Path:
    """Week 48 counted throughout (25 a quarter hour); week 49 counted from Monday until
    the counter stopped on Wednesday 2.12. 12:00 (20 a quarter hour)."""
    rows = [r for k in range(7) for r in open_hours(date(2026, 11, 23) + timedelta(days=k), 25)]
    stop = at(2026, 12, 2, 12)
    rows += [r for k in range(3) for r in open_hours(date(2026, 11, 30) + timedelta(days=k), 20,
                                                      until=stop)]
    return make_db(tmp_path / "stopped.db", rows,
                   [(at(2026, 11, 23), at(2026, 11, 30), True), (at(2026, 11, 30), stop, False)])


def test_a_stopped_counter_does_not_look_like_falling_numbers(stopped):
    changes = []
    for now in (at(2026, 12, 2, 12, 5), at(2026, 12, 3, 10), at(2026, 12, 5, 18)):
        r = report(stopped, "week", date(2026, 12, 1), now=now)
        c = r["comparison"]
        assert r["until"] == "2026-12-02T12:00:00+02:00"  # the last count, not the wall clock
        assert c["until"] == "2026-11-25T12:00:00+02:00" and c["like_for_like"]
        changes.append((c["visits"], c["current_visits"], c["change"], c["change_pct"]))
    assert changes[0] == changes[1] == changes[2] == (2800, 2240, -560, -20.0)
    assert any("has not counted since" in n for n in r["notes"])
    table = render_table(r)
    assert "2,800 → 2,240 (−560, −20.0 %)" in table
    thu = next(x for x in table.splitlines() if x.startswith("Thu 3.12."))
    assert "–" in thu and "not counted" in thu
    assert "−20.0 % against the previous week" in render_html(r)


# -- a year with 38 counted days against a full imported year -----------------------------------

@pytest.fixture
def imported_year(tmp_path) -> Path:
    return make_imported_year(tmp_path)


def make_imported_year(tmp_path: Path) -> Path:
    """2025 imported from an old counter as day totals (1,000 a day) with `kiosk import`;
    the kiosk counting from Sun 25.10.2026 12:00 and still running on Wed 2.12. 12:00."""
    db = tmp_path / "year.db"
    start, now = at(2026, 10, 25, 12), at(2026, 12, 2, 12)
    rows, d = [], date(2026, 10, 25)
    while d <= date(2026, 12, 2):
        rows += open_hours(d, 20, since=start, until=now)
        d += timedelta(days=1)
    make_db(db, rows, [(start, now, False)])
    lines, d = ["sensor_id,start,end,in,out"], date(2025, 1, 1)
    while d.year == 2025:
        s, e = local_midnight(d, TZ), local_midnight(d + timedelta(days=1), TZ)
        lines.append(f"door,{datetime.fromtimestamp(s, TZ).isoformat()},"
                     f"{datetime.fromtimestamp(e, TZ).isoformat()},1000,0")
        d += timedelta(days=1)
    (tmp_path / "2025.csv").write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(cli, ["import", str(tmp_path / "2025.csv"), "--db", str(db)])
    assert r.exit_code == 0, r.output
    return db


NOW = at(2026, 12, 2, 12)


def test_a_partly_counted_year_is_compared_over_its_counted_days_only(imported_year):
    r = report(imported_year, "year", date(2026, 1, 1), now=NOW)
    c = r["comparison"]
    # Sun 25.10. and Wed 2.12. were counted in part; the old counter gave whole days only
    assert c["compared"] == "26.10.–1.12. (37 days) against the same days of 2025"
    assert c["visits"] == 37 * 1000 and c["current_visits"] == 37 * 960
    assert (c["change"], c["change_pct"]) == (-1480, -4.0)
    assert not c["like_for_like"]  # 37 of 336 days: no headline percentage
    assert r["totals"]["visits"] == 37 * 960 + 8 * 80 + 4 * 80
    html = render_html(r)
    big = html.split('class="big"')[1].split("</p>")[0]
    assert "%" not in big
    months = {x["label"]: x for x in r["rows"]}
    assert months["March"]["visits"] is None and months["March"]["coverage"] == 0
    assert months["November"]["coverage"] == 1.0 and months["October"]["coverage"] < 0.25
    assert months["December"]["visits"] == 960 + 4 * 80
    table = render_table(r)
    assert "37,000 → 35,520 (−1,480, −4.0 %)" in table
    assert "37 of 335 completed days counted in full, 39 with counts" in table
    march = next(x for x in table.splitlines() if x.startswith("March"))
    assert march.split()[1] == "–" and "not counted" in march


def test_the_imported_year_is_marked_imported(imported_year):
    r = report(imported_year, "year", date(2025, 1, 1), now=NOW)
    assert r["imported"] and all(x["imported"] for x in r["rows"])
    assert r["totals"]["visits"] == 365 * 1000 and r["coverage"] == 1.0
    assert r["averages"]["weekday"]["visits"] == 1000
    html = render_html(r)
    assert "imported" in render_table(r) and "imported history" in html
    assert html.split("<svg")[1].count(f'fill="{BAR_IMPORTED}"') >= 12  # 12 bars and the legend
    assert all(x["imported"] == "yes" for x in csv_site_rows(render_csv(r)))
    # a day of it: the total is known, its hours are not (one row for the whole day)
    day = report(imported_year, "day", date(2025, 3, 4), now=NOW)
    assert day["totals"]["visits"] == 1000
    assert all(x["visits"] is None for x in day["rows"])
    assert day["rows"][0]["notes"] == ["imported as one total for Tuesday 4.3.2025 00:00–24:00"]
    assert "not counted" not in render_table(day).split("hour ")[1]


def test_export_json_gives_imported_rows_their_coverage(imported_year):
    with Store.open_reader(imported_year) as store:
        rows = totals(store, at(2025, 3, 4), at(2025, 3, 6), "1d", TZ, with_imports=True)
    assert [(r.in_count, r.coverage, r.imported) for r in rows] == [(1000, 1.0, True)] * 2
    r = CliRunner().invoke(cli, ["export", "--db", str(imported_year), "--since", "2025-03-04",
                                 "--until", "2025-03-05", "--period", "1d", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0] | {"start": None} == {
        "sensor_id": "door", "start": None, "end": "2025-03-04T22:00:00Z", "in": 1000, "out": 0,
        "coverage": 1.0, "imported": True}


def test_annotations_show_on_the_rows_and_bars_they_cover(midday):
    from tests.test_report import add_annotation

    with Store.open(midday) as store:
        add_annotation(store, at(2026, 12, 1, 18), at(2026, 12, 1, 19), "sensor-fault",
                       "Beam misaligned", "door")
    r = report(midday, "day", date(2026, 12, 1))
    noted = [x["hour"] for x in r["rows"] if x["notes"]]
    assert noted == [18] and r["rows"][18]["notes"] == ["sensor-fault [door]: Beam misaligned"]
    line = next(x for x in render_table(r).splitlines() if x.startswith("18:00"))
    assert line.endswith("sensor-fault [door]: Beam misaligned")
    html = render_html(r)
    assert html.count(f'fill="{MARK}"') == 2  # the marker on the 18:00 bar and the legend
    assert "18:00 +02:00: sensor-fault [door]: Beam misaligned</title></circle>" in html
    week = report(midday, "week", date(2026, 12, 1), now=at(2026, 12, 3, 10))
    assert [x["date"] for x in week["rows"] if x["notes"]] == ["2026-12-01"]


# -- "–" in every format --------------------------------------------------------------------------

def test_uncounted_hours_read_a_dash_in_every_format(midday):
    r = report(midday, "day", date(2026, 12, 1))
    nine = next(x for x in r["rows"] if x["hour"] == 9)
    assert nine["visits"] is None and nine["coverage"] == 0.0
    site = {x["label"][:5]: x for x in csv_site_rows(render_csv(r))}
    assert site["09:00"]["visits"] == "" and site["09:00"]["coverage"] == "0"
    assert site["21:00"]["visits"] == "0" and site["21:00"]["coverage"] == "1"
    data = json.loads(render_json(r))
    assert data["rows"][9]["visits"] is None and data["rows"][9]["coverage"] == 0
    html = render_html(r)
    assert "<td>09:00 +02:00</td><td class=\"n\">–</td>" in html
    assert "09:00 +02:00: not counted" in html and "not counted (no figure)" in html


# -- how the pages look in a browser -------------------------------------------------------------

def screenshot(html: str, name: str, tmp_path: Path) -> Path:
    from tests.test_report import _png_pixels  # noqa: F401 (imported by the caller too)

    page = tmp_path / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    png = tmp_path / f"{name}.png"
    out = subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
         "--window-size=1200,1600", "--hide-scrollbars", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert png.exists(), f"no screenshot: {out.returncode} {out.stderr[-2000:]}"
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(png, SHOTS / png.name)
    return png


def near(pixels: list[bytes], colour: str, tolerance: int = 8) -> int:
    rgb = bytes.fromhex(colour[1:])
    return sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True)))


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                    "(apt-get install chromium) - the HTML report is not rendered in a browser")
@pytest.mark.parametrize("which", ["partial-day", "partial-year"])
def test_partial_pages_in_headless_chromium(which, midday, imported_year, tmp_path):
    from tests.test_report import _png_pixels

    r = (report(midday, "day", date(2026, 12, 1)) if which == "partial-day"
         else report(imported_year, "year", date(2026, 1, 1), now=NOW))
    png = screenshot(render_html(r), which, tmp_path)
    width, height, pixels = _png_pixels(png)
    assert (width, height) == (1200, 1600)
    assert near(pixels, NOT_COUNTED) > 3_000, "the not-counted hatching is not drawn"
    assert near(pixels, BAR) > 1_000, "the counted bars are not drawn"
