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
    ``pattern`` needs named groups ``in_total`` and ``out_total``.  The first
    reading after each (re)connect is a baseline and counts nothing; later
    readings emit the increase as pulses.  If a total goes *down*, the device
    was reset: a ``device-reset`` WARNING is emitted and the new totals are
    counted in full (the device restarted from zero and counted those since).
    A reading that is more than 100000 above the previous one (or, after a
    reset, above zero) is not counted: an ``implausible-total`` WARNING is
    emitted and the reading becomes the new baseline.

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
from typing import Any

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
from kiosk.events import Direction, Emit, Pulse, Rejected, SensorEvent, printable_sample
from kiosk.exc import ConfigError
from kiosk.sensors.base import Sensor

#: Longest accepted line in bytes, not counting the ``\r\n`` terminator.
MAX_LINE = 256
#: Largest visitor count accepted in one ``IN <n>`` / ``OUT <n>`` line.
MAX_COUNT = 10_000
#: Largest increase of a running total accepted in one cumulative reading.
MAX_TOTAL_JUMP = 100_000
#: Most bytes taken from the port in one read.
READ_CHUNK = 4096

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
    ) -> None:
        super().__init__(id, emit=emit, clock=clock)
        self._regex = _compile_pattern(pattern, mode, id)
        numbers = {"baudrate": baudrate, "reconnect_min_s": reconnect_min_s,
                   "reconnect_max_s": reconnect_max_s, "read_timeout_s": read_timeout_s}
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
        self._totals: tuple[int, int] | None = None
        self._delay = self.reconnect_min_s
        self._connected_at = 0.0

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
        """Stop the reader thread and close the port; safe to call more than once."""
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
        """Take the lines the kernel still holds (a stop must not lose what was sent)."""
        ser = self._serial
        if ser is None:
            return
        try:
            for _ in range(64):  # bounded: a device that never stops talking
                waiting = ser.in_waiting
                if not waiting:
                    break
                self._feed(ser.read(min(waiting, READ_CHUNK)))
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
        self._totals = None  # cumulative mode: first reading is a new baseline
        self._connected_at = self.clock.monotonic()
        if self.state == "down":
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
        self._close_port()

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
        old, self._totals = self._totals, new
        if old is None:
            return  # baseline after start or reconnect
        shown = f"in={old[0]} out={old[1]} to in={new[0]} out={new[1]}"
        if new[0] < old[0] or new[1] < old[1]:
            deltas = new  # the device restarted from zero and counted these since
            self.emit(SensorEvent(
                self.id, ts, "device-reset",
                f"totals went down from {shown}: device reset; counting the new totals",
                "WARNING",
            ))
        else:
            deltas = (new[0] - old[0], new[1] - old[1])
        if max(deltas) > MAX_TOTAL_JUMP:
            self.emit(SensorEvent(
                self.id, ts, "implausible-total",
                f"totals jumped from {shown} (more than {MAX_TOTAL_JUMP} in one reading); "
                "not counted, taken as the new baseline",
                "WARNING",
            ))
            return
        both: tuple[Direction, Direction] = ("in", "out")
        for direction, delta in zip(both, deltas, strict=True):
            if delta > 0:
                self.counted[direction] += delta
                self.emit(Pulse(self.id, ts, direction, delta))
