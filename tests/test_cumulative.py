"""Tests for the pure cumulative-total decoder (kiosk.sensors.cumulative)."""

from __future__ import annotations

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
