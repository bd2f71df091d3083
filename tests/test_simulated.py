"""Tests of the simulated door sensor (kiosk.sensors.simulated)."""

from __future__ import annotations

import itertools
import math
import statistics
import threading
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kiosk.clock import ManualClock, ScaledClock
from kiosk.events import Pulse, SensorEvent
from kiosk.exc import ConfigError
from kiosk.sensors.simulated import SimulatedSensor, parse_hours, traffic_shape

HEL = ZoneInfo("Europe/Helsinki")


def local_ts(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> float:
    return datetime(y, m, d, hh, mm, tzinfo=HEL).timestamp()


def local_hour(ts: float) -> float:
    lt = datetime.fromtimestamp(ts, HEL)
    return lt.hour + lt.minute / 60 + lt.second / 3600 + lt.microsecond / 3.6e9


def make(start: float, out: list | None = None, **kw) -> tuple[SimulatedSensor, list]:
    out = [] if out is None else out
    kw.setdefault("seed", 1)
    return SimulatedSensor("door1", emit=out.append, clock=ManualClock(start), **kw), out


def pulses(msgs: list) -> list[Pulse]:
    return [m for m in msgs if isinstance(m, Pulse)]


# Four weeks starting on Monday 2026-06-01 (no DST change), simulated once per module.
MONTH_START = date(2026, 6, 1)
MONTH_DAYS = 28


@pytest.fixture(scope="module")
def month() -> list[Pulse]:
    t0 = local_ts(2026, 6, 1)
    sensor, out = make(t0, seed=20260601)
    t = t0
    for _ in range(MONTH_DAYS * 24):  # one hour at a time
        t += 3600
        sensor.advance_to(t)
    return pulses(out)


def per_day(ps: list[Pulse], direction: str = "in") -> Counter:
    return Counter(datetime.fromtimestamp(p.ts, HEL).date() for p in ps if p.direction == direction)


# -- statistics ---------------------------------------------------------------------------


def test_daily_totals_match_configuration(month):
    days = per_day(month)
    assert len(days) == MONTH_DAYS
    weekdays = [n for d, n in days.items() if d.weekday() < 5]
    weekends = [n for d, n in days.items() if d.weekday() >= 5]
    assert (len(weekdays), len(weekends)) == (20, 8)
    for values, lam in ((weekdays, 5500), (weekends, 2000)):
        # Mean of k Poisson(lam) days: standard error sqrt(lam / k); allow 4 of them.
        tol = 4 * math.sqrt(lam / len(values))
        assert abs(statistics.fmean(values) - lam) < tol, (values, lam)
        # Each day within 5 standard deviations, and days really vary (not a fixed count).
        assert all(abs(v - lam) < 5 * math.sqrt(lam) for v in values), values
        assert len(set(values)) > len(values) // 2


def test_daily_totals_are_poisson_dispersed(month):
    weekdays = [n for d, n in per_day(month).items() if d.weekday() < 5]
    sd = statistics.stdev(weekdays)
    assert 0.45 * math.sqrt(5500) < sd < 1.7 * math.sqrt(5500), sd


def test_no_arrivals_outside_opening_hours(month):
    for p in month:
        lt = datetime.fromtimestamp(p.ts, HEL)
        open_h, close_h = (10, 18) if lt.weekday() >= 5 else (8, 20)
        h = local_hour(p.ts)
        if p.direction == "in":
            assert open_h <= h < close_h, lt
        else:  # exits: not before opening, at most the grace period after closing
            assert open_h <= h <= close_h + SimulatedSensor.closing_grace_s / 3600, lt


def test_lunch_peak_busier_than_opening_and_afternoon_peak(month):
    hours = Counter(
        datetime.fromtimestamp(p.ts, HEL).hour
        for p in month
        if p.direction == "in" and datetime.fromtimestamp(p.ts, HEL).weekday() < 5
    )
    assert hours[12] > 2 * hours[8]
    assert hours[12] > hours[16] > hours[14]  # a smaller afternoon peak, above mid-afternoon
    assert hours[16] > hours[19]
    assert hours[7] == hours[20] == 0


def test_everyone_who_enters_leaves_the_same_evening(month):
    inside = 0
    last_day = None
    for p in month:  # already in time order
        day = datetime.fromtimestamp(p.ts, HEL).date()
        if day != last_day:
            assert inside == 0, f"{inside} visitors still inside at the start of {day}"
            last_day = day
        inside += 1 if p.direction == "in" else -1
        assert inside >= 0, p
    assert inside == 0
    assert per_day(month, "in") == per_day(month, "out")


def test_mean_stay_follows_option():
    """Little's law: time-integral of visitors inside / arrivals = mean stay."""

    def mean_stay(mean_min: float) -> float:
        t0 = local_ts(2026, 6, 2)
        sensor, out = make(t0, seed=7, mean_stay_min=mean_min)
        sensor.advance_to(t0 + 86400)
        area, inside, prev = 0.0, 0, t0
        for p in out:
            area += inside * (p.ts - prev)
            prev = p.ts
            inside += 1 if p.direction == "in" else -1
        return area / sum(p.direction == "in" for p in out) / 60

    # Stays are cut short at closing, so slightly below the configured mean.
    assert 22 < mean_stay(25) < 25.8
    assert 4.7 < mean_stay(5) < 5.3


def test_expected_profile_shape():
    sensor, _ = make(local_ts(2026, 6, 3))  # Wednesday
    hourly = [
        sensor.expected_arrivals(local_ts(2026, 6, 3, h), local_ts(2026, 6, 3, h) + 3600)
        for h in range(24)
    ]
    assert sum(hourly) == pytest.approx(5500)
    assert hourly[:8] == [0] * 8 and hourly[20:] == [0] * 4
    assert max(range(24), key=hourly.__getitem__) == 12
    assert hourly[16] > hourly[15] and hourly[16] > hourly[18]  # afternoon bump
    assert traffic_shape(7.99, 8, 20) == 0 and traffic_shape(20.0, 8, 20) == 0
    assert traffic_shape(12.5, 8, 20) > traffic_shape(16.75, 8, 20) > traffic_shape(15, 8, 20)


def test_weekend_visits_zero_means_closed_on_weekends():
    t0 = local_ts(2026, 6, 5)  # Friday
    sensor, out = make(t0, weekend_visits=0)
    sensor.advance_to(local_ts(2026, 6, 8))  # Monday 00:00
    days = per_day(pulses(out))
    assert set(days) == {date(2026, 6, 5)}
    assert sensor.expected_visits(date(2026, 6, 6)) == 0


# -- DST ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
@pytest.mark.parametrize("weekend_hours", ["10:00-18:00", "00:00-24:00", "02:30-05:00"])
def test_dst_day_has_the_normal_expectation(day, hours, weekend_hours):
    start = local_ts(day.year, day.month, day.day)
    nxt = day + timedelta(days=1)
    end = local_ts(nxt.year, nxt.month, nxt.day)
    assert end - start == hours * 3600
    sensor, _ = make(start, weekend_hours=weekend_hours)
    assert day.weekday() == 6  # both are Sundays
    assert sensor.expected_arrivals(start, end) == pytest.approx(2000)
    assert sensor.expected_visits(day) == 2000


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25)])
def test_dst_day_simulated_totals(day):
    start = local_ts(day.year, day.month, day.day)
    nxt = day + timedelta(days=1)
    end = local_ts(nxt.year, nxt.month, nxt.day)
    totals = []
    for seed in range(8):
        sensor, out = make(start, seed=seed, weekend_hours="00:00-24:00")
        sensor.advance_to(end + 3600)
        ins = [p for p in out if p.direction == "in"]
        assert all(start < p.ts < end for p in ins)
        totals.append(len(ins))
        assert sum(p.direction == "out" for p in out) == len(ins)
    assert abs(statistics.fmean(totals) - 2000) < 4 * math.sqrt(2000 / len(totals)), totals


def test_dst_repeated_hour_is_busy_twice():
    """On 2026-10-25 local 03:00–04:00 happens twice; with all-day hours both get traffic."""
    start = local_ts(2026, 10, 25)
    sensor, out = make(start, weekend_hours="00:00-24:00", weekend_visits=20000)
    sensor.advance_to(start + 25 * 3600)
    first = datetime(2026, 10, 25, 3, 30, tzinfo=HEL).timestamp()  # fold=0: EEST
    second = datetime(2026, 10, 25, 3, 30, fold=1, tzinfo=HEL).timestamp()  # EET
    assert second - first == 3600
    for mid in (first, second):
        n = sum(p.direction == "in" and abs(p.ts - mid) < 1800 for p in out)
        assert n > 0, mid


# -- advance_to mechanics --------------------------------------------------------------------


def test_advance_to_order_and_bounds():
    t0 = local_ts(2026, 6, 3, 11)
    sensor, out = make(t0, seed=3)
    steps = [0, 0.5, 0.25, 7, 0, 60, 1, 333.3, 3600, 0.001, 1800, 86400]
    t, prev, total = t0, t0, 0
    for step in steps * 3:
        t += step
        before = len(out)
        n = sensor.advance_to(t)
        batch = out[before:]
        assert n == len(batch)
        total += n
        assert all(isinstance(p, Pulse) and p.sensor_id == "door1" for p in batch)
        assert all(prev < p.ts <= t for p in batch), (prev, t)
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(batch))
        prev = max(prev, t)
    assert total > 10000
    assert sensor.advance_to(t - 100) == 0  # going back is a no-op
    assert sensor.advance_to(t) == 0


def test_first_event_is_after_the_start():
    t0 = local_ts(2026, 6, 3, 12, 30) + 45.5  # busiest moment, mid-way through a minute bin
    sensor, out = make(t0)
    assert sensor.advance_to(t0) == 0 and out == []
    sensor.advance_to(t0 + 60)
    # ~16 arrivals per minute at the peak, and nobody leaves who was not seen entering.
    assert 3 < len(out) < 40
    assert all(p.direction == "in" and t0 < p.ts for p in out)


def test_deterministic_with_seed_and_independent_of_step_size():
    t0 = local_ts(2026, 6, 3, 9, 17)
    a, out_a = make(t0, seed=42)
    b, out_b = make(t0, seed=42)
    c, out_c = make(t0, seed=43)
    end = t0 + 86400
    a.advance_to(end)
    t = t0
    while t < end:
        t = min(end, t + 1.0)
        b.advance_to(t)
    c.advance_to(end)
    assert len(out_a) > 5000
    assert out_a == out_b
    assert out_a != out_c


def test_status_counts():
    t0 = local_ts(2026, 6, 6, 9)  # Saturday, opening 10:00
    sensor, out = make(t0)
    st = sensor.status()
    assert st["emitted_in"] == st["emitted_out"] == 0
    assert st["expected_today"] == 2000 and st["weekend"] is True
    assert st["today"] == "2026-06-06" and st["running"] is False
    sensor.advance_to(local_ts(2026, 6, 6, 14))
    st = sensor.status()
    ins = sum(p.direction == "in" for p in out)
    outs = len(out) - ins
    assert (st["emitted_in"], st["emitted_out"], st["inside"]) == (ins, outs, ins - outs)
    assert st["inside"] > 0
    assert 0 < st["expected_so_far_today"] < 2000
    sensor.advance_to(local_ts(2026, 6, 7))
    assert sensor.status()["inside"] == 0


def test_resync_skips_gap_but_lets_visitors_out():
    t0 = local_ts(2026, 6, 3, 12)
    sensor, out = make(t0)
    sensor.advance_to(t0 + 1800)
    inside = sensor.status()["inside"]
    assert inside > 50
    n = sensor.resync(t0 + 3 * 86400)  # three days later
    assert n == inside and sensor.status()["inside"] == 0
    assert all(p.direction == "out" for p in out[-n:])
    before = len(out)
    sensor.advance_to(t0 + 3 * 86400 + 60)
    assert all(p.ts > t0 + 3 * 86400 for p in out[before:])
    # Backwards: the people inside keep their stays, shifted back with the clock.
    sensor.advance_to(t0 + 3 * 86400 + 1800)
    inside = sensor.status()["inside"]
    back = t0 + 86400
    assert sensor.resync(back) == 0
    before = len(out)
    sensor.advance_to(back + 12 * 3600)  # past closing time of that day
    new = out[before:]
    assert sum(p.direction == "out" for p in new) - sum(p.direction == "in" for p in new) == inside
    assert all(back < p.ts <= back + 9 * 3600 for p in new)
    assert sensor.status()["inside"] == 0


# -- thread mode ----------------------------------------------------------------------------


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_thread_mode_with_scaled_clock():
    start = local_ts(2026, 6, 3, 11, 45)
    clock = ScaledClock(start=start, speed=1800)  # 1 real second = 30 simulated minutes
    out: list = []
    lock = threading.Lock()

    def emit(m):
        with lock:
            out.append(m)

    sensor = SimulatedSensor("door1", emit=emit, clock=clock, seed=5)
    calls = []
    real_advance = sensor.advance_to

    def counting_advance(t):
        calls.append(time.monotonic())
        return real_advance(t)

    sensor.advance_to = counting_advance  # type: ignore[method-assign]
    t_started = clock.now()  # read before start(): the thread's first pulse cannot precede it
    sensor.start()
    sensor.start()  # idempotent
    assert isinstance(out[0], SensorEvent) and out[0].state == "simulated"
    assert "5500 weekday / 2000 weekend" in out[0].message
    assert sensor.state == "simulated"
    time.sleep(1.0)
    sensor.close()
    t_closed = clock.now()
    assert sensor.status()["running"] is False
    with lock:
        ps = pulses(out)
        n = len(out)
    # ~30 minutes of lunch-time traffic: hundreds of arrivals, none from before start().
    assert 150 < sum(p.direction == "in" for p in ps) < 1000
    assert all(start <= p.ts <= t_closed for p in ps)
    assert ps[0].ts > t_started - 5  # no burst of the past
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(ps))
    # tick = max(1 s, 0.05 * 1800 s) = 90 simulated s = 50 ms real: ~20 wake-ups a second.
    assert 5 <= len(calls) <= 30, len(calls)
    time.sleep(0.2)
    assert len(out) == n  # nothing after close
    sensor.close()  # idempotent


def test_thread_mode_starts_at_start_not_at_construction():
    t0 = local_ts(2026, 6, 3, 10)
    clock = ManualClock(t0)
    out: list = []
    sensor = SimulatedSensor("door1", emit=out.append, clock=clock, seed=9)
    clock.advance(4 * 3600)  # four busy hours pass before start()
    t_start = clock.now()
    try:
        sensor.start()
        assert wait_for(lambda: sensor.status()["last_t"] >= t_start)
        assert pulses(out) == []
        clock.advance(600)
        assert wait_for(lambda: sensor.status()["last_t"] == t_start + 600)
        ps = pulses(out)
        assert len(ps) > 20
        assert all(t_start < p.ts <= t_start + 600 for p in ps)
        # A clock step forward by a day is skipped, not replayed.
        inside = sensor.status()["inside"]
        clock.jump(86400)
        clock.advance(1)
        assert wait_for(lambda: sensor.status()["last_t"] >= t_start + 86401)
        jumps = [m for m in out if isinstance(m, SensorEvent) and m.kind == "clock-jump"]
        assert len(jumps) == 1 and jumps[0].level == "WARNING"
        ps = pulses(out)
        assert sum(p.direction == "in" for p in ps) < 400
        assert sensor.status()["inside"] <= inside
    finally:
        sensor.close()
    assert sensor.status()["running"] is False


def test_close_without_start_and_start_after_close():
    sensor, out = make(local_ts(2026, 6, 3))
    sensor.close()
    sensor.close()
    assert out == []
    with pytest.raises(RuntimeError):
        sensor.start()


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"weekday_visits": -1}, "weekday_visits"),
        ({"weekend_visits": float("nan")}, "weekend_visits"),
        ({"weekend_visits": "2000"}, "weekend_visits"),
        ({"weekday_visits": True}, "weekday_visits"),
        ({"weekday_hours": "25:00-08:00"}, "weekday_hours"),
        ({"weekday_hours": "20:00-08:00"}, "not after opening"),
        ({"weekend_hours": "10:00-10:00"}, "not after opening"),
        ({"weekend_hours": "08:60-20:00"}, "weekend_hours"),
        ({"weekend_hours": "8-20"}, "weekend_hours"),
        ({"weekend_hours": "24:00-24:00"}, "weekend_hours"),
        ({"weekend_hours": None}, "weekend_hours"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown timezone"),
        ({"timezone": "../../etc/passwd"}, "unknown timezone"),
        ({"timezone": ""}, "timezone"),
        ({"mean_stay_min": 0}, "mean_stay_min"),
        ({"tick_s": -1}, "tick_s"),
        ({"seed": "abc"}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_options_raise_config_error(options, needle):
    out: list = []
    with pytest.raises(ConfigError) as ei:
        SimulatedSensor("entrance-2", emit=out.append, clock=ManualClock(), **options)
    msg = str(ei.value)
    assert "'entrance-2'" in msg and needle in msg, msg
    assert out == []
    with pytest.raises(ConfigError):
        SimulatedSensor.validate_options("entrance-2", **options)


def test_validate_options_collects_every_problem_and_fills_defaults():
    with pytest.raises(ConfigError) as ei:
        SimulatedSensor.validate_options(
            "s1", weekday_visits=-5, weekend_hours="18:00-10:00", colour="red"
        )
    assert len(ei.value.problems) == 3
    assert any("colour" in p for p in ei.value.problems)
    opts = SimulatedSensor.validate_options("s1", weekday_visits=6000, seed=3)
    assert opts["weekday_visits"] == 6000.0 and opts["seed"] == 3
    assert opts["weekend_hours"] == "10:00-18:00" and opts["timezone"] == "Europe/Helsinki"


def test_construction_is_side_effect_free():
    out: list = []
    before = threading.active_count()
    sensor = SimulatedSensor("s1", emit=out.append, clock=ManualClock(), timezone="UTC")
    assert out == [] and threading.active_count() == before
    assert sensor.state == "starting" and sensor.kind == "simulated"


def test_parse_hours():
    assert parse_hours("08:00-20:00") == (8.0, 20.0)
    assert parse_hours(" 9:30 - 24:00 ") == (9.5, 24.0)
    for bad in ("", "08:00", "08:00-20:00-21:00", "24:00-24:00", "12:00-11:59", "07:00-24:30"):
        with pytest.raises(ValueError):
            parse_hours(bad)


def test_other_timezone_uses_local_hours():
    t0 = datetime(2026, 6, 3, tzinfo=ZoneInfo("America/New_York")).timestamp()
    sensor, out = make(t0, timezone="America/New_York")
    sensor.advance_to(t0 + 86400)
    ny = ZoneInfo("America/New_York")
    hours = defaultdict(int)
    for p in out:
        if p.direction == "in":
            hours[datetime.fromtimestamp(p.ts, ny).hour] += 1
    assert min(hours) == 8 and max(hours) == 19
