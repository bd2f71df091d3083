"""Feedback figures of `kiosk report` on built data with a known distribution: answers per
level, share positive, mean score, response rate, lowest-score hours, the like-for-like
comparison, too few answers; the text and HTML forms."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from kiosk.clock import ManualClock
from kiosk.events import Answer, Pulse
from kiosk.periods import local_midnight
from kiosk.report.compute import build_report
from kiosk.report.feedback import TOO_FEW, _stats
from kiosk.report.html import render_html
from kiosk.report.text import render_table
from kiosk.store import Store
from kiosk.writer import Writer

TZ = ZoneInfo("Europe/Helsinki")
DAY = date(2026, 11, 18)  # a Wednesday
WEEK_EARLIER = date(2026, 11, 11)
LEVELS = ("very_happy", "happy", "unhappy", "very_unhappy")


class Site:
    def __init__(self, tmp_path) -> None:
        self.store = Store.open(tmp_path / "counts.db")
        self.clock = ManualClock(local_midnight(DAY, TZ) + 86400 * 2)
        self.writer = Writer(self.store, clock=self.clock,
                             sensor_kinds={"door": "gpio", "exit": "feedback"})

    def day(self, d: date, visits: int, answers: dict[int, dict[str, int]],
            repeated: int = 0) -> None:
        """``answers``: local hour -> level -> count; visits spread over 08-20."""
        t0 = local_midnight(d, TZ)
        run = self.store.start_run(now=t0 + 8 * 3600, pid=1, version="t")
        for k in range(visits):
            self.writer.handle(Pulse("door", t0 + 8 * 3600 + k * (12 * 3600 / visits), "in"))
        for hour, levels in answers.items():
            n = 0
            for level, count in levels.items():
                for _ in range(count):
                    n += 1
                    self.writer.handle(Answer("exit", t0 + hour * 3600 + n * 10, level,
                                              LEVELS.index(level), 4))
        for k in range(repeated):
            self.writer.handle(Answer("exit", t0 + 9 * 3600 + k, "very_unhappy", 3, 4, True))
        assert self.writer.flush(events=True)
        self.store.end_run(run, now=t0 + 20 * 3600, reason="test")

    def report(self, d: date, span: str = "day") -> dict:
        return build_report(self.store, span=span, date=d, tz=TZ,
                            now=local_midnight(DAY, TZ) + 86400 * 2)


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.store.close()


def test_known_distribution(site):
    # 100 answers: 50 very happy at 10, 30 happy at 12, 15 unhappy + 5 very unhappy at 15
    site.day(DAY, 2000, {10: {"very_happy": 50}, 12: {"happy": 30},
                         15: {"unhappy": 15, "very_unhappy": 5}}, repeated=19)
    site.day(WEEK_EARLIER, 1000, {11: {"happy": 40}})
    f = site.report(DAY)["feedback"]
    assert f["terminals"] == ["exit"]
    assert [(lv["level"], lv["answers"]) for lv in f["levels"]] == [
        ("very_happy", 50), ("happy", 30), ("unhappy", 15), ("very_unhappy", 5)]
    assert f["answers"] == 100 and f["repeated"] == 19  # repeated presses apart
    assert f["share_positive_pct"] == 80.0
    assert f["mean_score"] == 75.0  # (50*100 + 30*66.7 + 15*33.3 + 5*0) / 100
    assert f["visits"] == 2000 and f["response_rate"] == 5.0
    # hour 15 has 20 answers (< 30): not among the lowest-score hours
    assert [(h["hour"], h["mean_score"]) for h in f["lowest_hours"]] == [
        ("12:00-13:00", 66.7), ("10:00-11:00", 100.0)]
    c = f["comparison"]
    assert c["description"] == "same weekday a week earlier" and c["compared"]
    assert (c["mean_score_then"], c["share_positive_pct_then"]) == (66.7, 100.0)
    assert (c["mean_score_change"], c["share_positive_change"]) == (8.3, -20.0)
    rows = {r["label"]: r["answers"] for r in f["rows"]}
    assert len(f["rows"]) == 24 and rows["10:00"] == {"very_happy": 50}
    assert rows["15:00"] == {"unhappy": 15, "very_unhappy": 5}
    assert set(f["definitions"]) == {"answers", "share_positive", "mean_score",
                                     "response_rate", "lowest_hours", "comparison"}
    # the visits figures are those of a site without the terminal
    r = site.report(DAY)
    assert r["sensors"] == ["door"] and r["totals"]["visits"] == 2000
    text = render_table(r)
    assert "share positive: 80.0 %; mean score: 75.0 / 100" in text
    assert "response rate: 5.0 answers per 100 visits" in text
    assert "repeated presses, not counted: 19" in text
    html = render_html(r)
    assert html.count('class="level-very_happy"') == 1
    assert "<title>10:00: 50 very happy</title>" in html
    assert "Mean score: the average score" in html


def test_too_few_answers_to_compare(site):
    site.day(DAY, 500, {10: {"very_happy": 20, "very_unhappy": 9}})  # 29 answers
    site.day(WEEK_EARLIER, 500, {10: {"happy": 100}})
    f = site.report(DAY)["feedback"]
    assert f["answers"] == 29 and f["too_few"]
    assert f["comparison"]["compared"] is False and f["comparison"]["text"] == TOO_FEW
    assert f["lowest_hours"] == []
    text = render_table(site.report(DAY))
    assert f"share positive and mean score: {TOO_FEW}" in text
    assert TOO_FEW in render_html(site.report(DAY))
    # the week before has enough, but this one has not: still not compared
    assert site.report(WEEK_EARLIER)["feedback"]["share_positive_pct"] == 100.0


def test_week_span_and_response_rate_over_counted_time(site):
    site.day(DAY, 1000, {9: {"very_happy": 30, "unhappy": 10}})
    site.day(WEEK_EARLIER, 1000, {9: {"happy": 40}})
    f = site.report(DAY, "week")["feedback"]
    assert f["answers"] == 40 and f["response_rate"] == 4.0
    assert [r["label"] for r in f["rows"]][:2] == ["Mon 16.11.", "Tue 17.11."]
    assert f["rows"][2]["answers"] == {"very_happy": 30, "unhappy": 10}
    assert f["comparison"]["description"] == "previous week"
    assert f["comparison"]["mean_score_then"] == 66.7


def test_share_positive_is_the_top_half_of_any_scale():
    # five levels: ranks 0 and 1 positive, the middle one (rank 2) neither
    five = _stats([("a", 0, 5, 10, 0), ("b", 1, 5, 10, 0), ("c", 2, 5, 10, 0),
                   ("d", 3, 5, 5, 0), ("e", 4, 5, 5, 0)])
    assert five["share_positive_pct"] == 50.0
    assert five["mean_score"] == pytest.approx((10 * 100 + 10 * 75 + 10 * 50 + 5 * 25) / 40, 0.01)
    two = _stats([("yes", 0, 2, 3, 1), ("no", 1, 2, 1, 0)])
    assert (two["share_positive_pct"], two["mean_score"], two["repeated"]) == (75.0, 75.0, 1)
    three = _stats([("good", 0, 3, 1, 0), ("ok", 1, 3, 1, 0), ("bad", 2, 3, 2, 0)])
    assert (three["share_positive_pct"], three["mean_score"]) == (25.0, 37.5)


def test_a_site_without_terminals_has_no_feedback_key(tmp_path):
    store = Store.open(tmp_path / "c.db")
    w = Writer(store, clock=ManualClock(), sensor_kinds={"door": "gpio"})
    w.handle(Pulse("door", local_midnight(DAY, TZ) + 36000, "in"))
    assert w.flush()
    r = build_report(store, span="day", date=DAY, tz=TZ, now=local_midnight(DAY, TZ) + 86400)
    assert "feedback" not in r and "Visitor feedback" not in render_table(r)
    store.close()
