"""The feedback figures in a real browser (headless Chromium through Playwright, as in
tests/test_web_browser.py): the report's stacked bar chart, and today's answers on the
dashboard's Now page beside the visits."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from kiosk.clock import ManualClock
from kiosk.events import Answer, Pulse
from kiosk.store import Store
from kiosk.writer import Writer
from tests.test_feedback_report import DAY, WEEK_EARLIER, Site
from tests.test_web_browser import browser, page_for, shots_dir  # noqa: F401 (fixtures)
from tests.webserver import Client, WebServer, web_config

LEVELS = ("very_happy", "happy", "unhappy", "very_unhappy")


def test_the_stacked_chart_in_chromium(tmp_path, page_for):  # noqa: F811
    from kiosk.report.html import render_html

    site = Site(tmp_path)
    site.day(DAY, 2000, {10: {"very_happy": 50}, 12: {"happy": 30},
                         15: {"unhappy": 15, "very_unhappy": 5}})
    site.day(WEEK_EARLIER, 1000, {11: {"happy": 40}})
    html = render_html(site.report(DAY))
    site.store.close()
    pg = page_for()
    pg.set_content(html)
    chart = pg.locator("svg.feedback-chart")
    box = chart.bounding_box()
    assert box and box["width"] > 600 and box["height"] > 150
    rects = chart.locator("rect[class^=level-]")
    assert rects.count() == 4  # one per level and hour with answers
    boxes = {rects.nth(i).get_attribute("class"): rects.nth(i).bounding_box() for i in range(4)}
    # the 15:00 bar: unhappy (15) at the bottom, very unhappy (5) stacked on top of it
    low, high = boxes["level-unhappy"], boxes["level-very_unhappy"]
    assert abs(high["y"] + high["height"] - low["y"]) < 1.0
    assert low["height"] == pytest.approx(3 * high["height"], rel=0.02)
    assert boxes["level-very_happy"]["height"] > boxes["level-happy"]["height"]
    assert pg.locator("table.feedback").is_visible()
    assert "80.0 %" in pg.text_content("body")
    pg.screenshot(path=str(shots_dir(tmp_path) / "feedback-report.png"), full_page=True)
    assert pg.console_errors == [] and pg.local.outside == []


def test_the_now_page_shows_todays_answers(tmp_path, page_for):  # noqa: F811
    db = tmp_path / "counts.db"
    sensors = ('\n[[sensors]]\nid = "door"\ntype = "simulated"\n'
               '\n[[sensors]]\nid = "exit"\ntype = "feedback-simulated"\n')
    cfg = web_config(tmp_path, db, web="public_read = true\n", sensors=sensors)
    now = time.time()
    midnight = datetime.fromtimestamp(now).astimezone().replace(hour=0, minute=0, second=0)
    if now - midnight.timestamp() < 120:
        pytest.skip("too close to midnight for answers of today")
    store = Store.open(db)
    w = Writer(store, clock=ManualClock(now), sensor_kinds={"door": "simulated",
                                                            "exit": "feedback-simulated"})
    store.start_run(now=now - 100, pid=1, version="t")
    for k in range(60):
        w.handle(Pulse("door", now - 90 + k, "in"))
    for k, level in enumerate(["very_happy"] * 20 + ["happy"] * 10 + ["very_unhappy"] * 10):
        w.handle(Answer("exit", now - 80 + k, level, LEVELS.index(level), 4))
    w.handle(Answer("exit", now - 30, "happy", 1, 4, True))
    assert w.flush(events=True)
    store.close()
    s = WebServer(cfg, tmp_path)
    try:
        status, _h, body = Client(s.url).get("/")
        assert status == 200 and 'data-figure="feedback-answers">40<' in body
        pg = page_for()
        pg.goto(s.url + "/")
        assert pg.text_content("[data-figure=feedback-answers]").strip() == "40"
        # (20*100 + 10*66.7 + 10*0) / 40 = 66.7; positive 30 of 40
        assert pg.text_content("[data-figure=feedback-score]").strip() == "66.7 / 100"
        assert pg.text_content("[data-figure=feedback-positive]").strip() == "75.0 % positive"
        assert "66.7 answers per 100 visits" in pg.text_content("[data-figure=feedback-rate]")
        assert "1 repeated press(es) left out" in pg.text_content("#live")
        assert pg.text_content("[data-figure=site-today]").strip() == "60"
        pg.screenshot(path=str(shots_dir(tmp_path) / "feedback-now.png"), full_page=True)
        assert pg.console_errors == [] and pg.local.outside == []
    finally:
        s.close()
