"""Tests for the pure cumulative-total decoder (kiosk.sensors.cumulative)."""

from __future__ import annotations

import random

import pytest

from kiosk.sensors.cumulative import CumulativeDecoder, DecisionKind, DecoderState


def run(readings: list[int], **kw: object) -> tuple[int, list[DecisionKind]]:
    dec = CumulativeDecoder(**kw)  # type: ignore[arg-type]
    decisions = [dec.feed(r) for r in readings]
    return sum(d.delta for d in decisions), [d.kind for d in decisions]


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([65530, 65534, 3], 9),  # IN wraps after 65535
        ([30000, 30005, 30010], 10),
        ([12345, 1235, 12347], 2),  # dropped digit
        ([12000, 12001, 12002], 2),
        ([12345, 123455, 12347], 2),  # extra digit
        ([40000, 8000, 40001], 1),  # garbled
        ([1000, 1001, 1002], 2),
    ],
)
def test_table_rows(readings: list[int], expected: int) -> None:
    assert run(readings)[0] == expected


def test_suspect_at_end_survives_state() -> None:
    dec = CumulativeDecoder()
    dec.feed(12345)
    d = dec.feed(1235)
    assert d.kind is DecisionKind.SUSPECT and d.delta == 0 and d.note
    st = dec.state()
    assert st == DecoderState(12345, 1235, False)
    dec2 = CumulativeDecoder.from_state(st)
    assert dec2.state() == st
    d2 = dec2.feed(12347)
    assert d2.kind is DecisionKind.REJECTED_NOISE and d2.delta == 2


def test_online_jump_is_not_counted_and_says_so() -> None:
    dec = CumulativeDecoder(name="IN", max_jump=1000)
    decisions = [dec.feed(r) for r in (100, 5000, 5001, 5003)]
    assert [d.kind for d in decisions] == [DecisionKind.FIRST, DecisionKind.SUSPECT,
                                           DecisionKind.REBASED, DecisionKind.COUNT]
    assert sum(d.delta for d in decisions) == 3
    assert decisions[2].level == "WARNING"
    assert "4900 not counted" in decisions[2].note and "check the device" in decisions[2].note


def test_where_two_readings_fit_both_the_least_is_counted() -> None:
    total, kinds = run([100, 1200, 1250], max_jump=1000)  # a leap that goes on
    assert (total, kinds[-1]) == (50, DecisionKind.REBASED)
    total, kinds = run([5000, 4500, 5010], max_jump=1000)  # a dip that does not
    assert (total, kinds[-1]) == (10, DecisionKind.REJECTED_NOISE)


def test_a_drop_too_high_for_a_reset_is_a_new_baseline() -> None:
    dec = CumulativeDecoder(name="IN", max_jump=1000)
    decisions = [dec.feed(r) for r in (5000, 3500, 4400)]
    assert decisions[-1].kind is DecisionKind.REBASED and decisions[-1].delta == 900
    assert "not a device reset" in decisions[-1].note


def test_offline_increase_counted_once_confirmed() -> None:
    dec = CumulativeDecoder(name="IN", max_jump=1000, max_offline_jump=100_000)
    dec.feed(100)
    dec.feed(110)
    dec = CumulativeDecoder.from_state(dec.state(), name="IN", max_jump=1000)
    small = dec.feed(160)  # within max_jump: counted at once
    assert (small.kind, small.delta, small.level) == (DecisionKind.OFFLINE, 50, "INFO")
    assert "50 counted while offline" in small.note
    dec.gap()  # the cable was out
    held = dec.feed(20_160)  # above max_jump: the next reading confirms it
    assert (held.kind, held.delta) == (DecisionKind.SUSPECT, 0)
    done = dec.feed(20_170)
    assert (done.kind, done.delta) == (DecisionKind.OFFLINE, 20_010)
    assert "20000 counted while offline" in done.note


def test_offline_garbled_first_reading_is_rejected() -> None:
    dec = CumulativeDecoder.from_state(DecoderState(12345, None), max_jump=1000)
    assert dec.feed(123465).kind is DecisionKind.SUSPECT  # an extra digit, right after a restart
    d = dec.feed(12400)
    assert (d.kind, d.delta) == (DecisionKind.REJECTED_NOISE, 55)


def test_drop_across_a_gap_is_flagged_and_counts_the_least() -> None:
    dec = CumulativeDecoder.from_state(DecoderState(40_000, None), max_jump=1000)
    assert dec.feed(30).kind is DecisionKind.SUSPECT
    d = dec.feed(35)
    assert (d.kind, d.delta, d.level) == (DecisionKind.RESET_WHILE_OFFLINE, 35, "WARNING")
    assert "cannot tell apart" in d.note


def test_jump_across_a_gap_beyond_max_offline_jump_is_not_counted() -> None:
    dec = CumulativeDecoder.from_state(DecoderState(10, None), max_jump=100,
                                       max_offline_jump=1000)
    dec.feed(50_000)
    d = dec.feed(50_005)
    assert (d.kind, d.delta, d.level) == (DecisionKind.REBASED, 5, "WARNING")
    assert "49990 not counted" in d.note


@pytest.mark.parametrize("bits", [16, 32])
def test_wrap_needs_the_top_of_the_counter(bits: int) -> None:
    top = 2**bits
    assert run([top - 10, 5], counter_bits=bits)[0] == 15
    # a drop from far below the top is not a wrap: held, then a reset
    total, kinds = run([top // 2, 5, 6], counter_bits=bits)
    assert total == 6 and kinds[-1] is DecisionKind.RESET
    # a 32-bit counter does not wrap at 2**16 when told its width
    if bits == 32:
        assert run([65530, 3, 65540], counter_bits=32)[0] == 10


MAX_JUMP = 1000


def _far(value: int, others: list[int], modulus: int) -> bool:
    return all(min((value - o) % modulus, (o - value) % modulus) > 4 * MAX_JUMP for o in others)


def _garble(rng: random.Random, value: int, modulus: int, near: list[int]) -> int | None:
    """A garbled reading of ``value``: a dropped or extra digit, or any number.  Only one
    that is far (> 4 max_jump) from every true total the decoder may compare it with
    (``near``): one closer could be a real reading, and nothing could tell them apart."""
    text = str(value)
    kind = rng.randrange(3)
    if kind == 0 and len(text) > 1:
        i = rng.randrange(len(text))
        g = int(text[:i] + text[i + 1:])
    elif kind == 1:
        i = rng.randrange(len(text) + 1)
        g = int(text[:i] + str(rng.randrange(10)) + text[i:])
    else:
        g = rng.randrange(modulus)
    if g >= modulus or not _far(g, [value, *near], modulus):
        return None
    return g


class _Device:
    """A counter of ``bits`` bits and what it really counted since the first reading."""

    def __init__(self, rng: random.Random) -> None:
        self.bits = rng.choice((16, 32))
        self.modulus = 2**self.bits
        self.value = rng.choice((0, rng.randrange(self.modulus),
                                 self.modulus - rng.randrange(1, 3 * MAX_JUMP)))
        self.counted = 0

    def add(self, n: int) -> None:
        self.value = (self.value + n) % self.modulus
        self.counted += n


def _simulate(seed: int, hostile: bool) -> tuple[int, int, int]:
    """One random life of a device and a decoder; returns (stored, counted by the device,
    unknowable).  ``hostile`` adds device resets (online and while offline) and offline gaps
    across the counter's top: there the readings cannot tell everything, and the visits that
    can be lost are added to ``unknowable``."""
    rng = random.Random(seed)
    dev = _Device(rng)
    kw: dict[str, object] = {"counter_bits": rng.choice((None, dev.bits)), "max_jump": MAX_JUMP}
    dec = CumulativeDecoder(**kw)  # type: ignore[arg-type]
    stored = dec.feed(dev.value).delta
    unknowable = 0
    history = [dev.value]  # true totals at each reading
    prev_garbled = False
    m = dev.modulus

    def step() -> int:
        return rng.randrange(MAX_JUMP // 2 + 1)

    was_reset = False
    since_wrap = 99  # readings since the counter last wrapped
    for _ in range(rng.randrange(5, 60)):
        event = rng.random()
        calm = not prev_garbled and not dec.pending  # the decoder holds nothing unconfirmed
        before = dev.value
        just_reset, was_reset = was_reset, False
        if event < 0.12 and not just_reset and (
                hostile or (since_wrap > 6 and before < m - 30 * MAX_JUMP)):
            # an offline gap: the daemon stopped, or the cable was out (not right after a
            # reset: a reset read once and then a gap looks just like a garbled reading)
            seen = dec.state().last  # the last total the decoder took: what the readings showed
            assert seen is not None
            inc = sum(step() for _ in range(rng.randrange(1, 20)))
            if event < 0.03 and hostile and 4 * MAX_JUMP < before < m - 30 * MAX_JUMP:
                lost = rng.randrange(0, 3 * MAX_JUMP)  # counted, then the device reset
                dev.add(lost)
                dev.value = 0
                dev.add(inc)
                unknowable += lost + before
            else:
                dev.add(inc)
                if seen > before or before + inc >= m:
                    # the counter wrapped since the decoder's last total: across the gap a
                    # wrap and a reset look alike, and it counts the least
                    unknowable += m - seen
                    since_wrap = 0
            if rng.random() < 0.5:
                dec = CumulativeDecoder.from_state(dec.state(), **kw)  # type: ignore[arg-type]
            else:
                dec.gap()
        elif hostile and event < 0.16 and calm and 4 * MAX_JUMP < before < m - 4 * MAX_JUMP:
            dev.value = 0  # a device reset right after a clean reading: decidable
            was_reset = True
            dev.add(rng.randrange(1, MAX_JUMP // 2 + 1))
        else:
            st = dec.state()
            dev.add(step())
            if dev.value < before:
                since_wrap = 0
                if st.suspect_offline and st.last is not None:
                    # wrapped before a reading after a gap was confirmed: the wrap is across
                    # the gap for the decoder, and looks like a reset there too
                    unknowable += m - st.last if st.last <= before else 0
            if event > 0.9:  # a restart between two readings (a gap of nothing)
                dec = CumulativeDecoder.from_state(dec.state(), **kw)  # type: ignore[arg-type]
        since_wrap += 1
        reading = dev.value
        if not prev_garbled and rng.random() < 0.1:
            seen = dec.state().last  # a true total: garbles are never taken
            assert seen is not None
            g = _garble(rng, dev.value, m, [*history[-4:], seen])
            if g is not None:
                reading = g
        prev_garbled = reading != dev.value
        history.append(dev.value)
        stored += dec.feed(reading).delta
        assert stored <= dev.counted, (seed, stored, dev.counted)
    for _ in range(2):  # two clean readings settle anything held
        dev.add(step())
        stored += dec.feed(dev.value).delta
        assert stored <= dev.counted, (seed, stored, dev.counted)
    assert not dec.pending, seed
    return stored, dev.counted, unknowable


def test_property_decidable_sequences_are_exact() -> None:
    """Wraps, single garbled readings, gaps and restarts: stored == counted, every time."""
    for seed in range(3000):
        stored, counted, _ = _simulate(seed, hostile=False)
        assert stored == counted, (seed, stored, counted)


def test_property_resets_never_overcount() -> None:
    """With resets and gaps across the top too: never more than the device counted, and
    less only by what the readings cannot show."""
    exact = 0
    for seed in range(3000):
        stored, counted, unknowable = _simulate(10_000 + seed, hostile=True)
        assert counted - unknowable <= stored <= counted, (seed, stored, counted, unknowable)
        if not unknowable:  # online resets only: decidable, so exact
            assert stored == counted, (seed, stored, counted)
            exact += 1
    assert exact > 500  # the check above ran often enough to mean something
