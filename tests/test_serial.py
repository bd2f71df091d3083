"""SerialSensor against real pseudo-terminals, loop:// and its framing directly."""

from __future__ import annotations

import errno
import os
import random
import threading
import time
import tty
from pathlib import Path

import pytest
import serial

from kiosk.clock import ManualClock, SystemClock
from kiosk.events import ChannelState, Pulse, Rejected, SensorEvent, TotalsState
from kiosk.exc import ConfigError
from kiosk.sensors import serial as serial_sensor
from kiosk.sensors.serial import MAX_LINE, SerialSensor, validate_pattern

TIMEOUT = 5.0  # real seconds any wait may take before the test fails


class Collector:
    """A thread-safe ``emit`` that remembers everything."""

    def __init__(self) -> None:
        self._items: list = []
        self._lock = threading.Lock()

    def __call__(self, message) -> None:
        with self._lock:
            self._items.append(message)

    @property
    def items(self) -> list:
        with self._lock:
            return list(self._items)

    def pulses(self) -> list[tuple[str, int]]:
        return [(m.direction, m.count) for m in self.items if isinstance(m, Pulse)]

    def rejected(self) -> list[Rejected]:
        return [m for m in self.items if isinstance(m, Rejected)]

    def events(self, kind: str | None = None) -> list[SensorEvent]:
        return [
            m for m in self.items
            if isinstance(m, SensorEvent) and (kind is None or m.kind == kind)
        ]


def wait_until(predicate, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class Pty:
    """One pseudo-terminal: tests write to ``master``, the sensor opens ``path``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation
        self.path = os.ttyname(self.slave)
        self._syncs = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class Rig:
    """Builds ptys and sensors and tears them down (sensors first)."""

    def __init__(self) -> None:
        self.ptys: list[Pty] = []
        self.sensors: list[SerialSensor] = []
        self.syncs = 0

    def pty(self) -> Pty:
        p = Pty()
        self.ptys.append(p)
        return p

    def sensor(self, port, *, start: bool = True, **options) -> tuple[SerialSensor, Collector]:
        collector = Collector()
        options.setdefault("clock", SystemClock())
        options.setdefault("read_timeout_s", 0.05)
        options.setdefault("reconnect_min_s", 0.02)
        options.setdefault("reconnect_max_s", 0.1)
        s = SerialSensor("east-gate", port=str(port), emit=collector, **options)
        self.sensors.append(s)
        if start:
            s.start()
        return s, collector

    def sync(self, pty: Pty, collector: Collector) -> None:
        """Send a line no protocol accepts and wait for its rejection: all before it is done."""
        self.syncs += 1
        marker = f"SYNC-{self.syncs}"
        pty.write(marker.encode() + b"\n")
        wait_until(lambda: any(r.sample == marker for r in collector.rejected()), marker)

    def close(self) -> None:
        for s in self.sensors:
            s.close()
        for p in self.ptys:
            p.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def non_sync_rejects(collector: Collector) -> list[Rejected]:
    return [r for r in collector.rejected() if not r.sample.startswith("SYNC-")]


# -- events protocol over a real pty --------------------------------------------


def test_in_out_counts_and_case(rig):
    p = rig.pty()
    s, c = rig.sensor(p.path)
    assert s.state == "ok"
    assert c.events("state")[0].message == f"connected to {p.path}"
    p.write(b"IN\nOUT\nIN 5\nout 3\nin\nOuT   2\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1), ("out", 1), ("in", 5), ("out", 3), ("in", 1), ("out", 2)]
    assert non_sync_rejects(c) == []
    assert all(m.sensor_id == "east-gate" for m in c.items)


def test_crlf_whitespace_and_empty_lines(rig):
    p = rig.pty()
    s, c = rig.sensor(p.path)
    p.write(b"IN\r\n  OUT 2  \r\n\tin\t\r\n\r\n\n   \n \t \r\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1), ("out", 2), ("in", 1)]
    assert non_sync_rejects(c) == []
    assert s.lines == 3 + 1  # empty lines are not counted; the sync line is


def test_zero_count_is_a_no_op(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path)
    p.write(b"IN 0\nOUT 0\nIN\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1)]
    assert non_sync_rejects(c) == []


def test_fragmented_writes_byte_by_byte(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path)
    for byte in b"IN 4\r\nOUT\n":
        p.write(bytes([byte]))
        time.sleep(0.002)  # let the reader see each byte on its own
    rig.sync(p, c)
    assert c.pulses() == [("in", 4), ("out", 1)]
    assert non_sync_rejects(c) == []


def test_lines_split_across_writes(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path)
    for chunk in (b"IN 1", b"2\nOU", b"T\nin", b" 3", b"\r", b"\n"):
        p.write(chunk)
        time.sleep(0.01)
    rig.sync(p, c)
    assert c.pulses() == [("in", 12), ("out", 1), ("in", 3)]
    assert non_sync_rejects(c) == []


def test_garbage_and_binary_noise_is_rejected_and_counting_continues(rig):
    p = rig.pty()
    s, c = rig.sensor(p.path)
    garbage = [
        b"HELLO", b"IN five", b"IN -3", b"INN", b"IN 5 5", b"\x00\x00", b"\xff\xfe\xfd",
        b"IN\x00", b"IN 10001", b"OUT 99999999999999999999", b"TOTAL IN=1 OUT=2", b"\x1b[2J",
    ]
    rng = random.Random(1234)
    for _ in range(20):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
        garbage.append(b"\x00" + noise.replace(b"\n", b"") + b"\xff")
    p.write(b"\n".join(garbage) + b"\n")
    p.write(b"IN 2\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 2)]
    rejects = non_sync_rejects(c)
    assert len(rejects) == len(garbage)
    assert s.rejected == len(garbage) + rig.syncs
    # printable_sample escapes up to 80 bytes: at most 4 characters each, plus "…"
    assert all(r.sample.isprintable() and len(r.sample) <= 4 * 80 + 1 for r in rejects)
    reasons = {r.sample: r.reason for r in rejects}
    assert "exceeds 10000" in reasons["IN 10001"]
    assert "baudrate" in reasons[r"\xff\xfe\xfd"]
    assert s.state == "ok"
    assert s._thread is not None and s._thread.is_alive()


def test_over_long_line_is_rejected_once_and_the_next_line_counts(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path)
    p.write(b"A" * 300 + b"\nIN\n")
    rig.sync(p, c)
    rejects = non_sync_rejects(c)
    assert [r.reason for r in rejects] == [f"line longer than {MAX_LINE} bytes"]
    assert rejects[0].sample == "A" * 80 + "…"
    assert c.pulses() == [("in", 1)]


def test_rest_of_an_over_long_line_is_not_parsed_as_a_line(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path)
    p.write(b"X" * 200)
    time.sleep(0.02)
    p.write(b"X" * 100)
    time.sleep(0.02)
    p.write(b"IN 7\nOUT\n")
    rig.sync(p, c)
    assert len(non_sync_rejects(c)) == 1
    assert c.pulses() == [("out", 1)]


# -- custom patterns -------------------------------------------------------------


def test_custom_pattern(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path, pattern=r"EVT;dir=(?P<direction>\w+);n=(?P<count>\d+)")
    p.write(b"EVT;dir=entry;n=2\nevt;DIR=Exit;n=1\nEVT;dir=in;n=4\n")
    p.write(b"EVT;dir=sideways;n=1\nIN\nEVT;dir=out;n=20000\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 2), ("out", 1), ("in", 4)]
    reasons = [r.reason for r in non_sync_rejects(c)]
    assert len(reasons) == 3
    assert "sideways" in reasons[0]
    assert reasons[1] == "does not match pattern"
    assert "exceeds" in reasons[2]


def test_custom_pattern_without_count_counts_one(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path, pattern=r"gate-(?P<direction>in|out)")
    p.write(b"GATE-IN\ngate-out\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1), ("out", 1)]


@pytest.mark.parametrize(
    ("pattern", "mode", "expected"),
    [
        ("(", "events", "not a valid regular expression"),
        (r"IN (\d+)", "events", "sensor 'east-gate': pattern must have a named group 'direction'"),
        (r"(?P<in_total>\d+)", "cumulative", "named group 'out_total'"),
        (r"(?P<direction>in)", "cumulative", "named group 'in_total'"),
        (None, "pulses", "mode must be one of events, cumulative"),
    ],
)
def test_bad_pattern_or_mode_is_a_config_error(pattern, mode, expected, tmp_path):
    with pytest.raises(ConfigError, match="sensor 'east-gate'") as info:
        SerialSensor(
            "east-gate", port=str(tmp_path / "absent"), emit=Collector(), clock=SystemClock(),
            mode=mode, pattern=pattern,
        )
    assert expected in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate_pattern(pattern, mode)
    assert expected.replace("sensor 'east-gate': ", "") in str(info.value)


def test_validate_pattern_accepts_good_patterns():
    assert validate_pattern(r"(?P<direction>in|out)(?: (?P<count>\d+))?", "events") is None
    assert validate_pattern(r"C:(?P<in_total>\d+)/(?P<out_total>\d+)", "cumulative") is None
    assert validate_pattern(None, "cumulative") is None


def test_bad_numbers_are_config_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        SerialSensor(
            "g", port=str(tmp_path / "x"), emit=Collector(), clock=SystemClock(),
            reconnect_min_s=0, read_timeout_s=-1,
        )
    assert len(info.value.problems) == 2


# -- cumulative mode -------------------------------------------------------------


def test_cumulative_baseline_deltas_and_reset(rig):
    p = rig.pty()
    s, c = rig.sensor(p.path, mode="cumulative")
    p.write(b"TOTAL IN=10 OUT=4\n")  # baseline only
    rig.sync(p, c)
    assert c.pulses() == []
    assert [e.level for e in c.events("total-baseline")] == ["INFO", "INFO"]
    p.write(b"total in=12 out=4\n")
    p.write(b"  TOTAL   IN = 15  OUT = 7 \r\n")
    p.write(b"TOTAL IN=15 OUT=7\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 2), ("in", 3), ("out", 3)]
    assert c.events("device-reset") == []

    p.write(b"TOTAL IN=2 OUT=1\n")  # held: a reset, or a garbled line?
    rig.sync(p, c)
    assert c.pulses()[3:] == []
    p.write(b"TOTAL IN=3 OUT=1\n")  # continues from 2 and 1: the device restarted from zero
    rig.sync(p, c)
    assert c.pulses()[3:] == [("in", 3), ("out", 1)]
    resets = c.events("device-reset")
    assert [e.level for e in resets] == ["WARNING", "WARNING"]
    assert all(e.state is None for e in resets)
    assert "IN total went down from 15 to 2, then 3: device reset; counted 3" in resets[0].message
    assert "OUT total went down from 7 to 1, then 1" in resets[1].message
    assert s.status()["counted"] == {"in": 2 + 3 + 3, "out": 3 + 1}
    # after every reading, the decoders' state for the writer
    last = [m for m in c.items if isinstance(m, TotalsState)][-1]
    assert (last.port, last.totals_in, last.totals_out) == (
        p.path, ChannelState(3, None, False), ChannelState(1, None, False))


def test_cumulative_garbled_reading_is_rejected_per_channel(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path, mode="cumulative")
    # IN loses a digit once; OUT is fine throughout
    p.write(b"TOTAL IN=12345 OUT=12000\nTOTAL IN=1235 OUT=12001\nTOTAL IN=12347 OUT=12002\n")
    rig.sync(p, c)
    assert sorted(c.pulses()) == [("in", 2), ("out", 1), ("out", 1)]
    (garbled,) = c.events("garbled-total")
    assert garbled.level == "WARNING"
    assert "IN total read 1235 between 12345 and 12347" in garbled.message


def test_cumulative_garbage_and_implausible_jump(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path, mode="cumulative")
    p.write(b"TOTAL IN=100 OUT=100\nIN\nTOTAL IN=x OUT=1\nTOTAL IN=500000 OUT=100\n")
    p.write(b"TOTAL IN=500001 OUT=101\n")
    rig.sync(p, c)
    # the confirmed jump is not counted (no visits invented), the step after it is
    assert c.pulses() == [("in", 1), ("out", 1)]
    assert [r.sample for r in non_sync_rejects(c)] == ["IN", "TOTAL IN=x OUT=1"]
    (jump,) = c.events("implausible-total")
    assert jump.level == "WARNING"
    assert "499900 not counted" in jump.message and "check the device" in jump.message


def test_cumulative_options_are_checked(tmp_path):
    with pytest.raises(ConfigError) as info:
        SerialSensor("x", port=str(tmp_path / "p"), emit=print, clock=SystemClock(),
                     mode="cumulative", counter_bits=24, max_jump=500, max_offline_jump=100)
    text = "\n".join(info.value.problems)
    assert "counter_bits: expected 16, 32 or 'auto', found 24" in text
    assert "max_offline_jump: expected a whole number of visits ≥ max_jump (500)" in text


def test_cumulative_resumes_from_stored_totals(rig):
    p = rig.pty()
    state = TotalsState("east-gate", 0.0, p.path, ChannelState(110), ChannelState(50))
    _s, c = rig.sensor(p.path, mode="cumulative", resume=state)
    p.write(b"TOTAL IN=160 OUT=50\nTOTAL IN=170 OUT=52\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 50), ("in", 10), ("out", 2)]
    (offline,) = c.events("counted-offline")
    assert offline.level == "INFO" and "IN total went from 110 to 160: 50 counted while offline" \
        in offline.message


def test_cumulative_totals_from_another_port_do_not_resume(rig):
    p = rig.pty()
    state = TotalsState("east-gate", 0.0, "/dev/ttyOLD", ChannelState(110), ChannelState(50))
    _s, c = rig.sensor(p.path, mode="cumulative", resume=state)
    p.write(b"TOTAL IN=160 OUT=50\nTOTAL IN=170 OUT=52\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 10), ("out", 2)]
    warning = c.events("total-baseline")[0]
    assert warning.level == "WARNING" and "/dev/ttyOLD" in warning.message


def test_cumulative_custom_pattern(rig):
    p = rig.pty()
    _s, c = rig.sensor(p.path, mode="cumulative", pattern=r"C:(?P<in_total>\d+)/(?P<out_total>\d+)")
    p.write(b"C:5/5\nc:6/8\nTOTAL IN=7 OUT=8\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1), ("out", 3)]
    assert [r.sample for r in non_sync_rejects(c)] == ["TOTAL IN=7 OUT=8"]


# -- ports coming and going ------------------------------------------------------


def plug(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".new")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def unplug(link: Path, p: Pty) -> None:
    link.unlink()
    p.close()


def test_port_vanishes_and_comes_back(rig, tmp_path):
    link = tmp_path / "ttyKIOSK"
    p = rig.pty()
    plug(link, p.path)
    s, c = rig.sensor(link)
    assert s.state == "ok"
    p.write(b"IN\n")
    rig.sync(p, c)

    for cycle in (1, 2):
        p.write(b"OUT 4")  # a partial line that must not survive the unplug
        wait_until(lambda: bytes(s._buf) == b"OUT 4", "partial line buffered")
        unplug(link, p)
        wait_until(lambda: s.state == "down", "state down")
        down = [e for e in c.events("state") if e.state == "down"][-1]
        assert down.level == "ERROR"
        assert down.message.startswith(f"{link}: ") and "reopening in" in down.message
        assert s.status()["last_error"].startswith(str(link))
        assert s.connection is None

        p = rig.pty()
        plug(link, p.path)
        wait_until(lambda: s.state == "ok", "state ok again")
        up = c.events("reconnect")[-1]
        assert up.message == f"reconnected to {link}" and up.state == "ok"
        assert s.reconnects == cycle
        p.write(b"IN 2\n")
        rig.sync(p, c)

    assert c.pulses() == [("in", 1), ("in", 2), ("in", 2)]
    assert non_sync_rejects(c) == []


def test_vanished_path_is_noticed_even_without_a_read_error(rig, tmp_path):
    link = tmp_path / "ttyKIOSK"
    p = rig.pty()
    plug(link, p.path)
    s, c = rig.sensor(link)
    link.unlink()  # the by-id link goes, but the old fd still reads fine
    wait_until(lambda: s.state == "down", "state down")
    assert "is the cable plugged in?" in c.events("state")[-1].message
    plug(link, p.path)
    wait_until(lambda: s.state == "ok", "state ok again")
    p.write(b"IN\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1)]


def test_cumulative_counts_what_came_while_unplugged(rig, tmp_path):
    link = tmp_path / "ttyKIOSK"
    p = rig.pty()
    plug(link, p.path)
    s, c = rig.sensor(link, mode="cumulative")
    p.write(b"TOTAL IN=100 OUT=50\nTOTAL IN=101 OUT=50\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1)]
    unplug(link, p)
    wait_until(lambda: s.state == "down", "state down")
    p = rig.pty()
    plug(link, p.path)
    wait_until(lambda: s.state == "ok", "state ok again")
    # the device counted 9 in while the cable was out: not a new baseline
    p.write(b"TOTAL IN=110 OUT=50\nTOTAL IN=112 OUT=51\n")
    rig.sync(p, c)
    assert c.pulses() == [("in", 1), ("in", 9), ("in", 2), ("out", 1)]
    (offline,) = c.events("counted-offline")
    assert "IN total went from 101 to 110: 9 counted while offline" in offline.message
    # a large gain while unplugged: held until the next reading confirms it
    unplug(link, p)
    wait_until(lambda: s.state == "down", "state down")
    p = rig.pty()
    plug(link, p.path)
    wait_until(lambda: s.state == "ok", "state ok again")
    p.write(b"TOTAL IN=5112 OUT=51\n")
    rig.sync(p, c)
    assert c.pulses()[4:] == []
    p.write(b"TOTAL IN=5113 OUT=51\n")
    rig.sync(p, c)
    assert c.pulses()[4:] == [("in", 5001)]
    assert "5000 counted while offline" in c.events("counted-offline")[-1].message


def test_lines_waiting_before_open_are_kept(rig):
    """pyserial's open() flushes the input queue; ours keeps what the device already sent."""
    p = rig.pty()
    p.write(b"IN 4\nOUT 2\n")
    _s, c = rig.sensor(p.path)
    rig.sync(p, c)
    assert c.pulses() == [("in", 4), ("out", 2)]


def test_close_takes_the_lines_still_in_the_kernel(rig):
    """Lines that reached the port but not yet the reader are counted by close()."""
    p = rig.pty()
    s, c = rig.sensor(p.path)
    rig.sync(p, c)
    hold, stalled = threading.Event(), threading.Event()
    real_feed = s._feed

    def slow_feed(data: bytes) -> None:  # the reader takes one chunk, then stalls
        stalled.set()
        hold.wait(TIMEOUT)
        real_feed(data)

    s._feed = slow_feed  # type: ignore[method-assign]
    p.write(b"IN\n")
    assert stalled.wait(TIMEOUT)
    p.write(b"IN\n" * 300)
    wait_until(lambda: s.connection.in_waiting >= 900, "300 lines waiting in the kernel")
    closer = threading.Thread(target=s.close)
    closer.start()
    wait_until(lambda: s._stop.is_set(), "stop requested")
    hold.set()
    closer.join(TIMEOUT)
    assert sum(n for d, n in c.pulses() if d == "in") == 301


def test_missing_port_at_start_goes_down_then_up(rig, tmp_path):
    link = tmp_path / "ttyUSB-not-yet"
    s, c = rig.sensor(link)  # must not raise
    assert s.state == "down"
    (down,) = c.events("state")
    assert down.level == "ERROR" and down.state == "down"
    assert "is the cable plugged in? check ls /dev/serial/by-id/" in down.message
    assert down.message.endswith("reopening in 0.02 s")
    assert s.status()["connected"] is False

    p = rig.pty()
    plug(link, p.path)
    wait_until(lambda: s.state == "ok", "state ok")
    p.write(b"OUT\n")
    rig.sync(p, c)
    assert c.pulses() == [("out", 1)]
    assert len(c.events("state")) == 1  # repeated failures while down are not re-announced


def test_second_opener_is_locked_out(rig):
    p = rig.pty()
    first, _ = rig.sensor(p.path)
    second, c2 = rig.sensor(p.path)
    assert first.state == "ok"
    assert second.state == "down"
    assert "another program" in c2.events("state")[0].message


def test_permission_denied_hint(rig, monkeypatch):
    def denied(self):
        raise serial.SerialException(errno.EACCES, f"could not open port {self.port}: denied")

    monkeypatch.setattr(serial_sensor.KeepInputSerial, "open", denied)
    s, c = rig.sensor("/dev/ttyUSB7")
    assert s.state == "down"
    assert "is the service user in group 'dialout'?" in c.events("state")[0].message


def test_loop_url(rig):
    s, c = rig.sensor("loop://")
    assert s.state == "ok"
    s.connection.write(b"IN 3\nOUT\nnonsense\n")
    wait_until(lambda: len(c.items) >= 4, "three messages after the state event")
    assert c.pulses() == [("in", 3), ("out", 1)]
    assert [r.sample for r in c.rejected()] == ["nonsense"]


def test_url_handler_without_exclusive(rig, monkeypatch):
    real = serial.serial_for_url

    def picky(url, **kwargs):
        if "exclusive" in kwargs:
            raise TypeError("unexpected keyword argument 'exclusive'")
        return real(url, **kwargs)

    monkeypatch.setattr(serial_sensor.serial, "serial_for_url", picky)
    s, c = rig.sensor("loop://")
    assert s.state == "ok"
    s.connection.write(b"IN\n")
    wait_until(lambda: c.pulses() == [("in", 1)], "a pulse")


def test_close_is_quick_and_idempotent(rig, tmp_path):
    p = rig.pty()
    up, _ = rig.sensor(p.path, read_timeout_s=2.0)
    down, _ = rig.sensor(tmp_path / "absent", reconnect_min_s=60, reconnect_max_s=60)
    thread = up._thread
    began = time.monotonic()
    up.close()
    down.close()
    assert time.monotonic() - began < 1.5
    assert not thread.is_alive()
    assert up.connection is None
    up.close()
    SerialSensor("x", port="loop://", emit=Collector(), clock=SystemClock()).close()


def test_status(rig):
    p = rig.pty()
    s, c = rig.sensor(p.path)
    p.write(b"IN\nbad\n")
    rig.sync(p, c)
    status = s.status()
    assert {"port", "lines", "rejected", "reconnects", "last_error"} <= status.keys()
    assert status["port"] == p.path
    assert status["lines"] == 3 and status["rejected"] == 2 and status["reconnects"] == 0
    assert status["last_error"] is None and status["state"] == "ok"


# -- framing, driven directly (deterministic chunk boundaries) -------------------


def feeder(**options) -> tuple[SerialSensor, Collector, ManualClock]:
    clock = ManualClock()
    collector = Collector()
    s = SerialSensor("f", port="loop://", emit=collector, clock=clock, **options)
    return s, collector, clock


def test_every_split_point_gives_the_same_result():
    stream = b"IN\r\nOUT 3\n\n  in 2 \nbad\n" + b"Z" * 300 + b"\nout\n"
    expected_pulses = [("in", 1), ("out", 3), ("in", 2), ("out", 1)]
    for cut in range(len(stream) + 1):
        s, c, _ = feeder()
        s._feed(stream[:cut])
        s._feed(stream[cut:])
        assert c.pulses() == expected_pulses, cut
        assert [r.sample[:3] for r in c.rejected()] == ["bad", "ZZZ"], cut
    s, c, _ = feeder()
    for byte in stream:
        s._feed(bytes([byte]))
    assert c.pulses() == expected_pulses
    assert len(c.rejected()) == 2


def test_line_length_boundary():
    s, c, _ = feeder()
    s._feed(b"IN" + b" " * (MAX_LINE - 2) + b"\r\n")  # exactly MAX_LINE bytes: fine
    s._feed(b"IN" + b" " * (MAX_LINE - 1) + b"\n")  # one more: rejected
    assert c.pulses() == [("in", 1)]
    assert len(c.rejected()) == 1


def test_buffer_stays_bounded_without_newlines():
    s, c, _ = feeder()
    for _ in range(1000):
        s._feed(b"Q" * 100)
        assert len(s._buf) <= MAX_LINE + 1 + 100
    s._feed(b"IN\nIN\n")  # the first newline ends the over-long line
    assert len(c.rejected()) == 1
    assert c.pulses() == [("in", 1)]


def test_pulse_timestamp_is_when_the_line_completed():
    s, c, clock = feeder()
    began = clock.now()
    s._feed(b"IN")
    clock.advance(5.0)
    s._feed(b" 2\n")
    (pulse,) = [m for m in c.items if isinstance(m, Pulse)]
    assert pulse.ts == began + 5.0
    assert pulse == Pulse("f", began + 5.0, "in", 2)
