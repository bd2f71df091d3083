"""Counters that talk over a serial line (USB-serial adapter, UART, or any pyserial URL).

One reader thread per port reads bytes, reassembles ``\\n``-terminated lines,
parses them, timestamps them and hands :class:`~kiosk.events.Pulse`,
:class:`~kiosk.events.Rejected` and :class:`~kiosk.events.SensorEvent` messages to
``emit``.  It never touches storage.

Two line protocols (case-insensitive; a trailing ``\\r`` and surrounding
whitespace are ignored, empty lines are skipped):

``mode="events"`` (default)
    ``IN``, ``OUT``, ``IN <n>``, ``OUT <n>``: ``n`` visitors crossed now.
    ``n = 0`` is accepted and counts nothing (some devices send it as a
    heartbeat); ``n > 10000`` in one line is rejected as garbage.  A custom
    ``pattern`` needs a named group ``direction`` (``in``/``out``, or the
    synonyms ``entry``/``exit``) and may have a named group ``count`` (default 1).

``mode="cumulative"``
    ``TOTAL IN=<n> OUT=<n>``: running totals kept by the device.  A custom
    ``pattern`` needs named groups ``in_total`` and ``out_total``.  Each channel
    (in, out) is judged on its own by a :class:`~kiosk.sensors.cumulative.CumulativeDecoder`
    (``counter_bits``, ``max_jump``, ``max_offline_jump``): increases count, a wrap
    near the top of the counter counts modulo, a single implausible reading is held
    until the next one tells a garbled line (rejected) from a device reset (counted
    from zero), a confirmed jump above ``max_jump`` is not counted, and what the
    device counted while the daemon was stopped or the cable out is counted at the
    first readings after it comes back.  Every such decision is emitted as a
    :class:`~kiosk.events.SensorEvent` for the journal.  After each reading a
    :class:`~kiosk.events.TotalsState` carries the decoders' state to the writer,
    which stores it with the counts; ``resume=`` gives it back at the next start.

A line longer than :data:`MAX_LINE` bytes is rejected once and discarded up to
the next newline.  When the port cannot be opened or disappears, the sensor
goes ``down`` and reopens it with exponential backoff; it never raises from
the reader thread and :meth:`SerialSensor.start` never raises for a missing port.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from typing import Any, cast

import serial

from kiosk.clock import Clock
from kiosk.config import (
    SENSOR_KEYS,
    Key,
    check_values,
    compile_serial_pattern,
    cross_check,
    number_check,
)
from kiosk.events import (
    ChannelState,
    Direction,
    Emit,
    Pulse,
    Rejected,
    SensorEvent,
    TotalsState,
    printable_sample,
)
from kiosk.exc import ConfigError
from kiosk.sensors.base import Sensor
from kiosk.sensors.cumulative import CumulativeDecoder, DecisionKind

#: Longest accepted line in bytes, not counting the ``\r\n`` terminator.
MAX_LINE = 256
#: Largest visitor count accepted in one ``IN <n>`` / ``OUT <n>`` line.
MAX_COUNT = 10_000
#: Most bytes taken from the port in one read.
READ_CHUNK = 4096
#: Most bytes taken from the port when it is closed (a device that never stops talking).
DRAIN_MAX_BYTES = 1 << 20

#: The journal kind of each cumulative-mode decision worth a journal line.
JOURNAL_KINDS = {
    DecisionKind.FIRST: "total-baseline",
    DecisionKind.WRAP: "counter-wrap",
    DecisionKind.SUSPECT: "garbled-total",
    DecisionKind.REJECTED_NOISE: "garbled-total",
    DecisionKind.RESET: "device-reset",
    DecisionKind.OFFLINE: "counted-offline",
    DecisionKind.RESET_WHILE_OFFLINE: "reset-while-offline",
    DecisionKind.REBASED: "implausible-total",
}

MODES = ("events", "cumulative")
#: The constructor's options: the ``[[sensors]]`` keys of a serial sensor in
#: :data:`kiosk.config.SENSOR_KEYS`, plus the read timeout the config does not expose.
_KEYS: dict[str, Key] = {
    **SENSOR_KEYS["serial"],
    "read_timeout_s": Key("read_timeout_s", (int, float), 0.5,
                          "a number of seconds > 0 and ≤ 10", number_check(0, 10, lo_open=True),
                          "pyserial read timeout (real seconds); bounds how long close takes"),
}
_FLAGS = re.IGNORECASE
_DEFAULT_PATTERNS = {
    "events": r"(?P<direction>in|out)(?:\s+(?P<count>[0-9]+))?",
    "cumulative": r"total\s+in\s*=\s*(?P<in_total>[0-9]+)[\s,;]+out\s*=\s*(?P<out_total>[0-9]+)",
}
_NO_MATCH = {
    "events": "not IN, OUT, IN <n> or OUT <n>",
    "cumulative": "not TOTAL IN=<n> OUT=<n>",
}
_DIRECTIONS: dict[str, Direction] = {"in": "in", "entry": "in", "out": "out", "exit": "out"}

_HINTS = {
    errno.ENOENT: "is the cable plugged in? check ls /dev/serial/by-id/",
    errno.ENODEV: "is the cable plugged in? check ls /dev/serial/by-id/",
    errno.ENXIO: "is the cable plugged in? check ls /dev/serial/by-id/",
    errno.EACCES: "is the service user in group 'dialout'?",
    errno.EPERM: "is the service user in group 'dialout'?",
    errno.EBUSY: "is another program (serial console, ModemManager, a second kiosk) using it?",
    errno.EAGAIN: "is another program (serial console, ModemManager, a second kiosk) using it?",
    errno.EIO: "was the device unplugged?",
}


class KeepInputSerial(serial.Serial):
    """pyserial's port, except that :meth:`open` keeps what the kernel already received.

    pyserial's POSIX ``open()`` flushes the input queue (``tcflush``): lines a counter sent
    while the port was closed for a reconnect, a reload or a restart would be thrown away.
    """

    _keep_input = False

    def open(self) -> None:
        self._keep_input = True
        try:
            super().open()
        finally:
            self._keep_input = False

    def _reset_input_buffer(self) -> None:
        if not self._keep_input:
            getattr(super(), "_reset_input_buffer")()  # noqa: B009 (not in the type stubs)

    def reset_input_buffer(self) -> None:  # what pyserial < 3.5 called from open()
        if not self._keep_input:
            super().reset_input_buffer()


def _compile_pattern(pattern: str | None, mode: str, sensor_id: str | None) -> re.Pattern[str]:
    where = f"sensor {sensor_id!r}: " if sensor_id is not None else ""
    if mode not in MODES:
        raise ConfigError(f"{where}mode must be one of {', '.join(MODES)}, got {mode!r}")
    if pattern is None:
        return re.compile(_DEFAULT_PATTERNS[mode], _FLAGS | re.ASCII)
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}pattern must be a string, got {type(pattern).__name__}")
    try:
        return compile_serial_pattern(pattern, mode)
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None


def validate_pattern(pattern: str | None, mode: str, *, sensor_id: str | None = None) -> None:
    """Check ``mode`` and a custom line ``pattern`` without opening anything.

    Raises :class:`~kiosk.exc.ConfigError` if ``mode`` is unknown, ``pattern``
    is not a valid regular expression, or it lacks the named groups the mode
    needs (``direction`` for ``events``; ``in_total`` and ``out_total`` for
    ``cumulative``).  ``pattern=None`` means the built-in protocol.
    """
    _compile_pattern(pattern, mode, sensor_id)


def _errno_of(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of the OSError it was raised from (pyserial wraps them)."""
    seen: BaseException | None = exc
    while seen is not None:
        number = getattr(seen, "errno", None)
        if isinstance(number, int):
            return number
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    """A one-line reason with an actionable hint where one is known."""
    number = _errno_of(exc)
    text = os.strerror(number) if number is not None else (str(exc) or type(exc).__name__)
    hint = _HINTS.get(number) if number is not None else None
    return f"{text} ({hint})" if hint else text


class SerialSensor(Sensor):
    """A counter sending text lines over a serial port.

    :param id: sensor id used in every message.
    :param port: device path (preferably ``/dev/serial/by-id/...``) or pyserial URL.
    :param emit: where messages go (usually ``queue.put``); called from the reader thread.
    :param clock: time source for timestamps and reconnect waits.
    :param baudrate: bits per second.
    :param mode: ``"events"`` or ``"cumulative"`` (see the module docstring).
    :param pattern: optional regex replacing the built-in line protocol (``re.fullmatch``
        on the stripped line, case-insensitive).
    :param reconnect_min_s: first reopen delay in clock seconds; doubles after each failure.
    :param reconnect_max_s: longest reopen delay in clock seconds.
    :param read_timeout_s: pyserial read timeout in real seconds; bounds how long
        :meth:`close` and vanished-path checks take.
    :param counter_bits: cumulative mode: 16, 32 or ``"auto"`` (see
        :class:`~kiosk.sensors.cumulative.CumulativeDecoder`).
    :param max_jump: cumulative mode: largest plausible increase per reading (visits).
    :param max_offline_jump: cumulative mode: largest increase counted across a gap (visits).
    :param resume: cumulative mode: the state stored after the last reading of a previous
        run (the writer's :class:`~kiosk.events.TotalsState`); the first reading then counts
        what the device counted meanwhile.  Ignored when it was read from another port.
    """

    kind = "serial"

    def __init__(
        self,
        id: str,
        *,
        port: str,
        emit: Emit,
        clock: Clock,
        baudrate: int = _KEYS["baudrate"].default,
        mode: str = _KEYS["mode"].default,
        pattern: str | None = _KEYS["pattern"].default,
        reconnect_min_s: float = _KEYS["reconnect_min_s"].default,
        reconnect_max_s: float = _KEYS["reconnect_max_s"].default,
        read_timeout_s: float = _KEYS["read_timeout_s"].default,
        counter_bits: int | str = _KEYS["counter_bits"].default,
        max_jump: int = _KEYS["max_jump"].default,
        max_offline_jump: int = _KEYS["max_offline_jump"].default,
        resume: TotalsState | None = None,
    ) -> None:
        super().__init__(id, emit=emit, clock=clock)
        self._regex = _compile_pattern(pattern, mode, id)
        numbers = {"baudrate": baudrate, "reconnect_min_s": reconnect_min_s,
                   "reconnect_max_s": reconnect_max_s, "read_timeout_s": read_timeout_s,
                   "counter_bits": counter_bits, "max_jump": max_jump,
                   "max_offline_jump": max_offline_jump}
        # the config's own checks (kiosk.config.SENSOR_KEYS), not a second copy of them
        checked, found = check_values(_KEYS, numbers)
        found += cross_check("serial", checked)
        problems = [f"sensor {id!r}: {p.key}: {p.text}" for p in found]
        if not port:
            problems.insert(0, f"sensor {id!r}: port must not be empty")
        if problems:
            raise ConfigError(problems)
        self.port = port
        self.baudrate = baudrate
        self.mode = mode
        self.pattern = pattern
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self.read_timeout_s = float(read_timeout_s)
        self.lines = 0  # non-empty lines received, good or bad
        self.rejected = 0
        self.reconnects = 0
        self.counted = {"in": 0, "out": 0}
        self.last_error: str | None = None
        self._is_path = "://" not in port
        self._serial: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line, waiting for its newline
        self._totals: tuple[int, int] | None = None  # the last reading, for status
        self.counter_bits = counter_bits
        self.max_jump = max_jump
        self.max_offline_jump = max_offline_jump
        self._decoders = self._make_decoders(resume)
        self._delay = self.reconnect_min_s
        self._connected_at = 0.0

    def _make_decoders(self, resume: TotalsState | None) -> tuple[CumulativeDecoder, ...]:
        """One decoder per channel (in, out), restored from ``resume`` when it fits."""
        if self.mode != "cumulative":
            return ()
        bits = None if self.counter_bits == "auto" else cast(int, self.counter_bits)

        def make(name: str, state: ChannelState | None) -> CumulativeDecoder:
            kw: dict[str, Any] = {"name": name, "counter_bits": bits, "max_jump": self.max_jump,
                                  "max_offline_jump": self.max_offline_jump}
            if state is None:
                return CumulativeDecoder(**kw)
            return CumulativeDecoder.from_state(state, **kw)

        if resume is not None and resume.port != self.port:
            self.emit(SensorEvent(
                self.id, self.clock.now(), "total-baseline",
                f"the stored totals were read from {resume.port}, not {self.port}: the first "
                "reading is a new baseline (a different device; nothing counted for the gap)",
                "WARNING"))
            resume = None
        if resume is None:
            return make("IN", None), make("OUT", None)
        return make("IN", resume.totals_in), make("OUT", resume.totals_out)

    # -- public -----------------------------------------------------------------

    @property
    def connection(self) -> Any:
        """The open pyserial object, or ``None`` while the port is down."""
        return self._serial

    def start(self) -> None:
        """Open the port (state ``ok`` or ``down``, never raises for port errors), start reading."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._try_open()
        self._thread = threading.Thread(target=self._run, name=f"serial-{self.id}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        """Stop the reader thread, take what the kernel still holds, close the port; safe to
        call more than once."""
        self._stop.set()
        ser = self._serial
        if ser is not None and hasattr(ser, "cancel_read"):
            try:
                ser.cancel_read()  # wakes a blocking read at once on POSIX
            except Exception:
                pass
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.read_timeout_s + 5.0)
        self._drain_port()
        self._close_port()

    def _drain_port(self) -> None:
        """Take the lines the kernel still holds: a stop or a reload must not lose what was
        sent.  Reads until the input queue is empty (at most :data:`DRAIN_MAX_BYTES`)."""
        ser = self._serial
        if ser is None:
            return
        taken = 0
        try:
            while taken < DRAIN_MAX_BYTES:
                waiting = ser.in_waiting
                if not waiting:
                    break
                # (a read may return nothing once: the wake-up byte of cancel_read)
                data = ser.read(min(waiting, READ_CHUNK))
                taken += len(data)
                self._feed(data)
        except Exception:  # the port vanished meanwhile: nothing more to take
            pass

    def status(self) -> dict[str, Any]:
        """Counters and state for ``kiosk status`` (``last_error`` is a message or ``None``)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "port": self.port,
            "mode": self.mode,
            "connected": self._serial is not None,
            "lines": self.lines,
            "rejected": self.rejected,
            "reconnects": self.reconnects,
            "counted": dict(self.counted),
            "totals": self._totals,
            "last_error": self.last_error,
        }

    # -- port handling ----------------------------------------------------------

    def _open_port(self) -> Any:
        kwargs: dict[str, Any] = {"baudrate": self.baudrate, "timeout": self.read_timeout_s}
        if self._is_path and os.name == "posix":
            return KeepInputSerial(self.port, exclusive=True, **kwargs)
        try:
            return serial.serial_for_url(self.port, exclusive=True, **kwargs)
        except TypeError:
            # a third-party URL handler that does not know exclusive=
            return serial.serial_for_url(self.port, **kwargs)

    def _try_open(self) -> bool:
        """One open attempt; sets state and returns whether the port is open."""
        try:
            ser = self._open_port()
        except Exception as exc:  # SerialException, OSError, ValueError (bad URL), ...
            self._went_down(_describe(exc))
            return False
        with self._lock:
            if self._stop.is_set():
                ser.close()
                return False
            self._serial = ser
        self._buf.clear()
        self._discarding = False
        self._connected_at = self.clock.monotonic()
        if self.state == "down":
            for decoder in self._decoders:
                decoder.gap()  # the cable was out: the next reading follows a gap
            self.reconnects += 1
            self.set_state("ok", f"reconnected to {self.port}", kind="reconnect")
        else:
            self.set_state("ok", f"connected to {self.port}")
        return True

    def _went_down(self, reason: str) -> None:
        if self._serial is not None and (
            self.clock.monotonic() - self._connected_at >= self.reconnect_max_s
        ):
            self._delay = self.reconnect_min_s  # it had been healthy; start backoff afresh
        self._close_port()
        self._buf.clear()  # a partial line from before the fault is meaningless
        self._discarding = False
        self.last_error = f"{self.port}: {reason}"
        self.set_state(
            "down", f"{self.last_error}; reopening in {self._delay:g} s", level="ERROR"
        )

    def _close_port(self) -> None:
        with self._lock:
            ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except Exception:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            ser = self._serial
            if ser is None:
                if self.clock.wait(self._stop, self._delay):
                    break
                self._delay = min(self._delay * 2, self.reconnect_max_s)
                self._try_open()
                continue
            try:
                self._read_some(ser)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._went_down(_describe(exc))
        # the port stays open: close() drains what the kernel still holds, then closes it

    def _read_some(self, ser: Any) -> None:
        data = ser.read(min(max(1, ser.in_waiting), READ_CHUNK))
        if data:
            self._feed(data)
        elif self._is_path and not os.path.exists(self.port):
            raise FileNotFoundError(errno.ENOENT, "device path vanished", self.port)

    # -- framing and parsing ----------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Add raw bytes; handle every complete line; keep at most one partial line."""
        buf = self._buf
        buf += data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if self._discarding:
                    buf.clear()
                elif len(buf) > MAX_LINE + 1:  # + 1: room for a trailing "\r"
                    self._too_long(bytes(buf))
                    self._discarding = True
                    buf.clear()
                return
            line = bytes(buf[:end])
            del buf[: end + 1]
            if self._discarding:
                self._discarding = False  # end of the over-long line already rejected
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE:
                self._too_long(line)
                continue
            try:
                self._handle_line(line)
            except Exception as exc:  # a bug must not kill the reader
                self._reject(line, f"internal error: {exc!r}")

    def _too_long(self, data: bytes) -> None:
        self.lines += 1
        self._reject(data, f"line longer than {MAX_LINE} bytes")

    def _reject(self, line: bytes, reason: str, ts: float | None = None) -> None:
        self.rejected += 1
        ts = self.clock.now() if ts is None else ts
        self.emit(Rejected(self.id, ts, printable_sample(line), reason))

    def _handle_line(self, raw: bytes) -> None:
        stripped = raw.strip()
        if not stripped:
            return
        ts = self.clock.now()
        self.lines += 1
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            self._reject(raw, "not text (undecodable bytes; wrong baudrate?)", ts)
            return
        if not text.replace("\t", " ").isprintable():
            self._reject(raw, "contains control characters (line noise or wrong baudrate?)", ts)
            return
        match = self._regex.fullmatch(text)
        if match is None:
            reason = _NO_MATCH[self.mode] if self.pattern is None else "does not match pattern"
            self._reject(raw, reason, ts)
        elif self.mode == "events":
            self._handle_event(raw, match, ts)
        else:
            self._handle_totals(raw, match, ts)

    def _handle_event(self, raw: bytes, match: re.Match[str], ts: float) -> None:
        word = (match.group("direction") or "").lower()
        direction = _DIRECTIONS.get(word)
        if direction is None:
            self._reject(raw, f"direction {word!r} is not in, out, entry or exit", ts)
            return
        count_text = match.groupdict().get("count")
        if count_text is None:
            count = 1
        elif count_text.isdecimal() and len(count_text) <= 9:
            count = int(count_text)
        else:
            self._reject(raw, f"count {count_text!r} is not a whole number up to {MAX_COUNT}", ts)
            return
        if count > MAX_COUNT:
            self._reject(raw, f"count {count} exceeds {MAX_COUNT} in one line (garbage?)", ts)
        elif count > 0:  # "IN 0" is a harmless no-op
            self.counted[direction] += count
            self.emit(Pulse(self.id, ts, direction, count))

    def _handle_totals(self, raw: bytes, match: re.Match[str], ts: float) -> None:
        texts = (match.group("in_total"), match.group("out_total"))
        if not all(t is not None and t.isdecimal() and len(t) <= 18 for t in texts):
            self._reject(raw, "totals are not whole numbers", ts)
            return
        new = (int(texts[0]), int(texts[1]))
        self._totals = new
        both: tuple[Direction, Direction] = ("in", "out")
        for direction, decoder, total in zip(both, self._decoders, new, strict=True):
            decision = decoder.feed(total)
            if decision.level:
                self.emit(SensorEvent(self.id, ts, JOURNAL_KINDS[decision.kind],
                                      decision.note, decision.level))
            if decision.delta > 0:
                self.counted[direction] += decision.delta
                self.emit(Pulse(self.id, ts, direction, decision.delta))
        # after the pulses, on the same queue: the writer stores it with their counts
        self.emit(TotalsState(self.id, ts, self.port, self._decoders[0].state(),
                              self._decoders[1].state()))
