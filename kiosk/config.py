"""Loading and validating the TOML configuration.

Every problem is reported at once, one line each, naming the file, the key, what
was expected and what was found.  Unknown keys are errors: a typo must never fall
back silently to a default.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiosk.exc import ConfigError

DEFAULT_PATH = "/etc/kiosk/kiosk.toml"
#: The time zone of local labels when neither the config nor the database says otherwise.
DEFAULT_TIMEZONE = "Europe/Helsinki"
SENSOR_TYPES = ("gpio", "gpio-pair", "serial", "simulated", "feedback", "feedback-simulated")
#: Sensor types that collect visitors' answers (satisfaction buttons), not visits.
FEEDBACK_TYPES = ("feedback", "feedback-simulated")
#: Sensor types that invent their input (allowed with an accelerated clock).
SIMULATED_TYPES = ("simulated", "feedback-simulated")
#: How many answer levels (buttons) a feedback terminal has.
FEEDBACK_LEVELS = range(2, 6)
PERIOD_MINUTES = (15, 30, 60)

_NUM = (int, float)
_PIN = (int, str)


class _Required:
    """The default of a key that must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a key that has none (it must be written in the config).
REQUIRED: Any = _Required()

#: A key check: returns the normalised value, or raises :class:`ValueError` (its text,
#: if any, is appended to the message as the reason).
Check = Callable[[Any], Any]


class Key(NamedTuple):
    """One configuration key, written once: the dataclasses, the validator and the
    sensor constructors all take their type, default and range from here."""

    name: str
    #: Accepted TOML types (an int is accepted where float is; a boolean never is a number).
    types: tuple[type, ...]
    #: The default (:data:`REQUIRED`: must be given; ``None``: absent means "derived").
    default: Any
    #: What a valid value looks like, used in "expected …, found …".
    expected: str
    #: Range or format check returning the normalised value; ``None``: type check only.
    check: Check | None = None
    #: One line of documentation (units, and why the bounds are what they are).
    doc: str = ""


class KeyProblem(NamedTuple):
    """One refused key: ``text`` is "expected …, found …" or "unknown key …"."""

    key: str
    text: str


def number_check(lo: float, hi: float | None = None, *, lo_open: bool = False) -> Check:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), returned as float."""

    def check(value: Any) -> float:
        x = float(value)
        if not math.isfinite(x) or x < lo or (lo_open and x == lo) or (hi is not None and x > hi):
            raise ValueError
        return x

    return check


def _num_key(name: str, default: float, unit: str, lo: float, hi: float | None = None, *,
             lo_open: bool = False, doc: str = "", expected: str = "") -> Key:
    """A float key of ``unit`` in ``[lo, hi]`` (NaN and infinities are always refused)."""
    if not expected:
        expected = f"a number of {unit} {'>' if lo_open else '≥'} {lo:g}"
        if hi is not None:
            expected += f" and ≤ {hi:g}"
    return Key(name, _NUM, default, expected, number_check(lo, hi, lo_open=lo_open), doc)


def _int_range(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if not lo <= value <= hi:
            raise ValueError
        return int(value)

    return check


def _one_of(*choices: Any) -> Check:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError
        return value

    return check


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ID_EXPECTED = "1-64 letters, digits, '.', '_', ':' or '-'"


def _identifier(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError
    return value


def check_db_path(value: str) -> str:
    """A file path for the database; raises :class:`ValueError` for one where counts would be
    lost (empty, ``:memory:``, a URI) or cannot be written (a directory)."""
    text = value.strip()
    if not text:
        raise ValueError("an empty path makes SQLite use a temporary file: every count would be lost")
    if text == ":memory:" or text.startswith("file:"):
        raise ValueError("the database must be a file on disk, or every count is lost at exit")
    if text.endswith(("/", os.sep)) or os.path.isdir(text):
        raise ValueError("that is a directory; name the file, e.g. /var/lib/kiosk/counts.db")
    return value


def check_timezone(value: str) -> str:
    """An IANA zone name such as ``Europe/Helsinki``; raises :class:`ValueError`."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("unknown timezone; is the tzdata package installed?") from None
    return value


#: BCM GPIO numbers of a Raspberry Pi's 40-pin header.
PIN_RANGE = range(0, 28)
_PIN_RE = re.compile(r"(?:GPIO|BCM)?(\d{1,6})")


def normalise_pin(pin: int | str) -> int:
    """The BCM number of ``pin``: ``17``, ``"17"``, ``"GPIO17"`` and ``"BCM17"`` all give 17.

    The one pin normaliser: the config stores its result (gpiozero reads an int as a
    BCM number) and detects duplicate pins with it.  Raises :class:`ValueError` for
    anything else, or a number outside BCM 0–27.
    """
    if isinstance(pin, bool):
        raise ValueError("a boolean is not a pin")
    if isinstance(pin, int):
        number = pin
    elif isinstance(pin, str) and (m := _PIN_RE.fullmatch(pin.strip().upper())):
        number = int(m.group(1))
    else:
        raise ValueError
    if number not in PIN_RANGE:
        raise ValueError(f"BCM pins are {PIN_RANGE.start}-{PIN_RANGE.stop - 1}")
    return number


def pin_key(pin: int | str) -> str:
    """A label for ``pin`` that compares equal for 17, 'GPIO17' and 'BCM17' ("GPIO17").

    Built on :func:`normalise_pin`; a pin it refuses keeps its own (upper-cased) text.
    """
    try:
        return f"GPIO{normalise_pin(pin)}"
    except ValueError:
        return str(pin).strip().upper()


_LEVEL_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _level_names(value: dict[str, Any]) -> None:
    """Raise :class:`ValueError` unless ``value`` has 2–5 keys that are level names."""
    if not FEEDBACK_LEVELS.start <= len(value) < FEEDBACK_LEVELS.stop:
        raise ValueError(f"{len(value)} levels; a terminal has "
                         f"{FEEDBACK_LEVELS.start}-{FEEDBACK_LEVELS.stop - 1}")
    for name in value:
        if not _LEVEL_RE.fullmatch(name):
            raise ValueError(f"level name {name!r}: use lower-case letters, digits and '_'")


def check_buttons(value: Any) -> dict[str, int]:
    """``{very_happy = 5, happy = 6, ...}`` (best first, 2–5 levels) → level name → BCM pin.

    Raises :class:`ValueError` naming the bad level or pin."""
    if not isinstance(value, dict):
        raise ValueError
    _level_names(value)
    out: dict[str, int] = {}
    for name, pin in value.items():
        try:
            number = normalise_pin(pin)
        except ValueError as e:
            raise ValueError(f"{name}: {e or 'not a pin'}") from None
        if number in out.values():
            raise ValueError(f"{name}: pin {pin!r} is already used by another button")
        out[name] = number
    return out


def check_shares(value: Any) -> dict[str, float]:
    """``{very_happy = 50, happy = 30, ...}`` (best first, 2–5 levels, relative weights ≥ 0,
    not all 0) → level name → share (summing to 1).  Raises :class:`ValueError`."""
    if not isinstance(value, dict):
        raise ValueError
    _level_names(value)
    for name, w in value.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name}: the weight must be a number ≥ 0")
    total = float(sum(value.values()))
    if total <= 0:
        raise ValueError("at least one weight must be > 0")
    return {name: w / total for name, w in value.items()}


_HOURS_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


def parse_hours(text: str) -> tuple[float, float]:
    """``"08:00-20:00"`` → ``(8.0, 20.0)`` (local hours).  ``24:00`` is allowed as closing.

    Raises :class:`ValueError` with a readable reason.  Overnight hours (closing
    before opening) are not supported.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string such as '08:00-20:00', found {text!r}")
    m = _HOURS_RE.fullmatch(text)
    if not m:
        raise ValueError(f"expected opening hours such as '08:00-20:00', found {text!r}")
    oh, om, ch, cm = (int(g) for g in m.groups())
    for hh, mm in ((oh, om), (ch, cm)):
        if mm > 59 or hh > 24 or (hh == 24 and mm != 0):
            raise ValueError(f"{hh:02d}:{mm:02d} in {text!r} is not a time of day (00:00–24:00)")
    if oh == 24:
        raise ValueError(f"opening time 24:00 in {text!r} is not a time of day")
    open_h, close_h = oh + om / 60.0, ch + cm / 60.0
    if close_h <= open_h:
        raise ValueError(
            f"closing time {ch:02d}:{cm:02d} is not after opening time {oh:02d}:{om:02d} "
            f"in {text!r} (overnight opening hours are not supported)"
        )
    return open_h, close_h


def _hours(value: str) -> str:
    parse_hours(value)  # raises ValueError with the reason
    return value


#: Named groups a custom serial ``pattern`` needs, per ``mode``.
SERIAL_PATTERN_GROUPS: dict[str, tuple[str, ...]] = {
    "events": ("direction",),
    "cumulative": ("in_total", "out_total"),
}


def compile_serial_pattern(pattern: str, mode: str) -> re.Pattern[str]:
    """Compile a custom serial line ``pattern`` (case-insensitive) for ``mode``.

    Raises :class:`ValueError` if it is not a regular expression or lacks a named
    group of :data:`SERIAL_PATTERN_GROUPS`.
    """
    try:
        compiled = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    for group in SERIAL_PATTERN_GROUPS[mode]:
        if group not in compiled.groupindex:
            raise ValueError(f"pattern must have a named group {group!r} in {mode} mode, "
                             f"e.g. (?P<{group}>...)")
    return compiled


def _keys(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


DEVICE_KEYS = _keys(
    Key("id", (str,), REQUIRED, _ID_EXPECTED, _identifier,
        "this kiosk's id in uploads, e.g. 'espoo-isoomena-01'"),
    Key("site", (str,), REQUIRED, _ID_EXPECTED, _identifier,
        "the site (building) it counts for, e.g. 'iso-omena-service-centre'"),
    Key("timezone", (str,), DEFAULT_TIMEZONE, "an IANA time zone such as 'Europe/Helsinki'",
        check_timezone, "zone of local labels and reports (counts are stored in UTC)"),
    Key("clock", (str,), "ntp", "'ntp', 'rtc' or 'system'", _one_of("ntp", "rtc", "system"),
        "which wall clock to trust: 'ntp' holds pulses unplaced until NTP has set the clock "
        "since boot (a Pi without a battery clock); 'rtc' (a battery clock) and 'system' (no "
        "network at all) trust the system clock from boot"),
)
STORAGE_KEYS = _keys(
    Key("path", (str,), "/var/lib/kiosk/counts.db",
        "a file path such as '/var/lib/kiosk/counts.db'", check_db_path,
        "the SQLite database file (not a directory, not ':memory:')"),
    _num_key("flush_interval_s", 2.0, "seconds", 0, 60, lo_open=True,
             expected="seconds between 0 and 60 (a kill -9 loses at most this much)",
             doc="seconds between flushes of pending counts to SQLite (0 < s ≤ 60)"),
    Key("event_retention_days", (int,), 30, "1 to 36500 (whole days)",
        _int_range(1, 36500), "days to keep the raw per-pulse event log"),
    Key("journal_retention_days", (int,), 365, "1 to 36500 (whole days)",
        _int_range(1, 36500), "days to keep the local journal of daemon happenings"),
)
UPLOAD_KEYS = _keys(
    Key("url", (str,), REQUIRED, "an https:// URL", None, "the statistics server's endpoint"),
    Key("token_file", (str,), REQUIRED, "a path to a file holding the bearer token", None,
        "bearer token file: one line, mode 0600 or 0640 (kiosk/token_file.py refuses others)"),
    Key("period_minutes", (int,), 60, "15, 30 or 60", _one_of(*PERIOD_MINUTES),
        "length of an uploaded period, minutes"),
    _num_key("jitter_s", 300.0, "seconds", 0, 3600,
             doc="random delay (s) after a period closes before uploading; ≤ 1 h so a "
                 "period is never sent later than the next one closes"),
    Key("batch_max", (int,), 200, "1 to 1000 (a whole number)", _int_range(1, 1000),
        "most totals per request"),
    _num_key("grace_s", 10.0, "seconds", 0, 3600,
             doc="seconds after a period ends before it is considered closed (≤ 1 h)"),
    _num_key("timeout_s", 30.0, "seconds", 0, 600, lo_open=True,
             doc="the longest one request may take, seconds (≤ 10 min): connecting, sending "
                 "and the whole answer together, so a server trickling bytes cannot hold it "
                 "longer; also each socket wait (connecting: at most 10 s)"),
    Key("ca_file", (str,), None, "a path to a PEM file of a private CA",
        None, "private CA; TLS is always verified"),
    Key("allow_insecure_http", (bool,), False, "true or false", None,
        "allow plain http:// to hosts other than loopback"),
    _num_key("max_backoff_s", 3600.0, "seconds", 0, 86400, lo_open=True,
             doc="cap of the retry backoff, seconds (≤ 1 day)"),
)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port); raises :class:`ValueError`.
    Port 0 means any free port (the server says which)."""
    if not isinstance(text, str):
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8080")
    m = re.fullmatch(r"\s*(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})\s*", text)
    if not m:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080")
    port = int(m.group(3))
    if port > 65535:
        raise ValueError(f"port {port} is not 0-65535")
    return m.group(1) or m.group(2), port


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as e:
        raise ValueError("" if str(e).startswith("expected") else str(e)) from None
    return value.strip()


REPORT_KEYS = _keys(
    Key("visits", (str,), "in", "'in' or 'in+out/2'", _one_of("in", "in+out/2"),
        "'in' counts entries; 'in+out/2' halves both directions for sensors without direction"),
)

WEB_KEYS = _keys(
    Key("listen", (str,), "127.0.0.1:8080", "HOST:PORT such as 127.0.0.1:8080", _listen,
        "address of `kiosk web`; anything but loopback needs password_file"),
    Key("password_file", (str,), None, "a path to the file `kiosk web --set-password` writes",
        None, "scrypt hash of the dashboard password (no file: no login, so no writes)"),
    Key("public_read", (bool,), False, "true or false", None,
        "let anyone who can reach the dashboard read it without a login (writes always need one)"),
    Key("cert_file", (str,), None, "a path to a PEM certificate (chain)", None,
        "serve HTTPS with this certificate (with key_file)"),
    Key("key_file", (str,), None, "a path to the PEM private key of cert_file", None,
        "the private key of cert_file"),
)

_PIN_EXPECTED = "a BCM pin number 0-27 such as 17, or a name such as 'GPIO17' or 'BCM17'"
_COMMON_GPIO = _keys(
    Key("pull_up", (bool,), True, "true or false", None,
        "internal pull-up (true) or pull-down (false)"),
    Key("active_high", (bool,), None, "true or false", None,
        "line level while the beam is broken; absent: the opposite of pull_up"),
    _num_key("min_pulse_ms", 30.0, "milliseconds", 0,
             doc="a blocking shorter than this (ms) is noise"),
    _num_key("holdoff_ms", 50.0, "milliseconds", 0,
             doc="a blocking starting within this (ms) after the previous one is chatter"),
    _num_key("stuck_after_s", 30.0, "seconds", 0, lo_open=True,
             doc="a blocking longer than this (s) is a stuck beam, not counted"),
)
#: Per sensor type: the keys of its ``[[sensors]]`` table besides ``id`` and ``type``.
SENSOR_KEYS: dict[str, dict[str, Key]] = {
    "gpio": _keys(
        Key("pin", _PIN, REQUIRED, _PIN_EXPECTED, normalise_pin, "the input pin (BCM)"),
        Key("direction", (str,), "in", "'in' or 'out'", _one_of("in", "out"),
            "what one pulse counts as"),
        *_COMMON_GPIO.values(),
    ),
    "gpio-pair": _keys(
        Key("pin_a", _PIN, REQUIRED, _PIN_EXPECTED, normalise_pin, "beam A, the outer beam"),
        Key("pin_b", _PIN, REQUIRED, _PIN_EXPECTED, normalise_pin, "beam B, the inner beam"),
        _num_key("max_transit_ms", 1500.0, "milliseconds", 0, 60000, lo_open=True,
                 doc="most time (ms) from one beam's activation to the other's (≤ 1 min)"),
        Key("invert", (bool,), False, "true or false", None, "swap in and out"),
        *_COMMON_GPIO.values(),
    ),
    "serial": _keys(
        Key("port", (str,), REQUIRED,
            "a device path such as '/dev/serial/by-id/…' or a pyserial URL", None,
            "the serial device (preferably /dev/serial/by-id/…) or a pyserial URL"),
        Key("baudrate", (int,), 9600, "a baud rate between 1 and 4000000",
            _int_range(1, 4_000_000), "bits per second"),
        Key("mode", (str,), "events", "'events' or 'cumulative'",
            _one_of("events", "cumulative"), "line protocol (see kiosk.sensors.serial)"),
        Key("pattern", (str,), None, "a regular expression with named groups", None,
            "regex replacing the built-in line protocol"),
        _num_key("reconnect_min_s", 1.0, "seconds", 0, 3600, lo_open=True,
                 doc="first reopen delay (s); doubles after each failure"),
        _num_key("reconnect_max_s", 60.0, "seconds", 0, 86400, lo_open=True,
                 doc="longest reopen delay (s), ≥ reconnect_min_s and ≤ 1 day"),
        Key("counter_bits", (int, str), "auto", "16, 32 or 'auto'", _one_of(16, 32, "auto"),
            "cumulative mode: width of the device's counters; 'auto': a drop from near 2¹⁶ "
            "or 2³² is a wrap"),
        Key("max_jump", (int,), 1000, "a whole number of visits between 1 and 1000000",
            _int_range(1, 1_000_000),
            "cumulative mode: largest plausible increase of a total between two readings "
            "(visits); a larger one is held until the next reading decides, and not counted "
            "if confirmed"),
        Key("max_offline_jump", (int,), 100_000,
            "a whole number of visits between 1 and 1000000000, ≥ max_jump",
            _int_range(1, 1_000_000_000),
            "cumulative mode: largest increase counted across a restart or an unplugged cable "
            "(visits); a larger one is journalled and not counted"),
    ),
    "simulated": _keys(
        _num_key("weekday_visits", 5500.0, "visits per weekday", 0, 1e7,
                 doc="expected arrivals on a Monday–Friday"),
        _num_key("weekend_visits", 2000.0, "visits per weekend day", 0, 1e7,
                 doc="expected arrivals on a Saturday or Sunday"),
        Key("weekday_hours", (str,), "08:00-20:00", "opening hours such as '08:00-20:00'",
            _hours, "local opening hours on weekdays"),
        Key("weekend_hours", (str,), "10:00-18:00", "opening hours such as '10:00-18:00'",
            _hours, "local opening hours on weekend days"),
        _num_key("mean_stay_min", 25.0, "minutes", 0, 1440, lo_open=True,
                 doc="mean length of a visit, minutes (≤ 1 day)"),
        Key("seed", (int,), None, "an integer", None, "fixed seed: the same traffic every run"),
    ),
    "feedback": _keys(
        Key("buttons", (dict,), REQUIRED,
            "a table of 2-5 levels, best first, each a BCM pin: "
            "{ very_happy = 5, happy = 6, unhappy = 13, very_unhappy = 19 }",
            check_buttons, "the answer buttons, best first, each wired from its pin to ground"),
        Key("led_pin", _PIN, None, _PIN_EXPECTED, normalise_pin,
            "optional 'thank you' light, lit for led_s after an answer"),
        _num_key("led_s", 2.0, "seconds", 0, 60, lo_open=True,
                 doc="how long the 'thank you' light stays on after an answer, seconds"),
        _num_key("lockout_s", 3.0, "seconds", 0, 600,
                 doc="a press less than this (s) after the terminal's previous press is a "
                     "repeated press: kept, but left out of every score"),
        Key("pull_up", (bool,), True, "true or false", None,
            "internal pull-up (true: buttons wired to ground) or pull-down (false)"),
        Key("active_high", (bool,), None, "true or false", None,
            "line level while a button is pressed; absent: the opposite of pull_up"),
        _num_key("min_pulse_ms", 30.0, "milliseconds", 0,
                 doc="a press shorter than this (ms) is noise"),
        _num_key("holdoff_ms", 50.0, "milliseconds", 0,
                 doc="a press starting within this (ms) after the same button's previous "
                     "one is contact chatter"),
        _num_key("stuck_after_s", 10.0, "seconds", 0, lo_open=True,
                 doc="a button held longer than this (s) is a fault (stuck), not an answer"),
    ),
    "feedback-simulated": _keys(
        _num_key("answers_per_day", 150.0, "answers per weekday", 0, 1e6,
                 doc="expected answers on a Monday–Friday (about 3 % of a 5,500-visit day)"),
        _num_key("weekend_answers_per_day", 55.0, "answers per weekend day", 0, 1e6,
                 doc="expected answers on a Saturday or Sunday"),
        Key("shares", (dict,), {"very_happy": 0.5, "happy": 0.3, "unhappy": 0.15,
                                "very_unhappy": 0.05},
            "a table of 2-5 levels, best first, each a weight ≥ 0: "
            "{ very_happy = 50, happy = 30, unhappy = 15, very_unhappy = 5 }",
            check_shares, "the levels (best first) and the share of answers of each"),
        _num_key("repeat_share", 0.05, "a share", 0, 1,
                 doc="share of answers followed by a repeated press (0-1)"),
        Key("weekday_hours", (str,), "08:00-20:00", "opening hours such as '08:00-20:00'",
            _hours, "local opening hours on weekdays"),
        Key("weekend_hours", (str,), "10:00-18:00", "opening hours such as '10:00-18:00'",
            _hours, "local opening hours on weekend days"),
        Key("seed", (int,), None, "an integer", None, "fixed seed: the same answers every run"),
    ),
}


def check_values(keys: Mapping[str, Key], values: Mapping[str, Any]) -> tuple[
        dict[str, Any], list[KeyProblem]]:
    """Check ``values`` against ``keys``: types, ranges and unknown keys.

    Returns the normalised values with defaults filled in (a missing required key
    stays out; the caller words its "missing" message) and the problems found.
    A ``None`` value of a key whose default is ``None`` means "absent".
    """
    out: dict[str, Any] = {}
    problems: list[KeyProblem] = []
    for name, value in values.items():
        key = keys.get(name)
        if key is None:
            near = [k for k in keys if _close(k, name)]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(KeyProblem(
                name, f"unknown key{hint}; expected one of: {', '.join(sorted(keys))}"))
            continue
        if value is None and key.default is None:
            out[name] = None
            continue
        if not _type_ok(value, key.types):
            problems.append(KeyProblem(name, f"expected {key.expected}, found {_describe(value)}"))
            continue
        if key.check is not None:
            try:
                value = key.check(value)
            except (ValueError, OverflowError) as e:
                reason = f" ({e})" if str(e) else ""
                problems.append(KeyProblem(
                    name, f"expected {key.expected}, found {_describe(value)}{reason}"))
                continue
        out[name] = value
    for name, key in keys.items():
        if name not in out and key.default is not REQUIRED and name not in values:
            out[name] = key.default
    return out, problems


def cross_check(stype: str, opts: Mapping[str, Any]) -> list[KeyProblem]:
    """Checks spanning several keys of one ``stype`` sensor (values already checked)."""
    problems: list[KeyProblem] = []
    if stype == "serial":
        lo, hi = opts.get("reconnect_min_s"), opts.get("reconnect_max_s")
        if lo is not None and hi is not None and hi < lo:
            problems.append(KeyProblem(
                "reconnect_max_s", f"expected a number of seconds ≥ reconnect_min_s ({lo:g}), "
                                   f"found {hi:g}"))
        jump, offline = opts.get("max_jump"), opts.get("max_offline_jump")
        if jump is not None and offline is not None and offline < jump:
            problems.append(KeyProblem(
                "max_offline_jump", f"expected a whole number of visits ≥ max_jump ({jump}), "
                                    f"found {offline}"))
        if opts.get("pattern") is not None and opts.get("mode") is not None:
            try:
                compile_serial_pattern(opts["pattern"], opts["mode"])
            except ValueError as e:
                expected = SENSOR_KEYS["serial"]["pattern"].expected
                problems.append(KeyProblem(
                    "pattern", f"expected {expected}, found {_describe(opts['pattern'])} ({e})"))
    return problems


@dataclass(frozen=True)
class DeviceConfig:
    id: str
    site: str
    timezone: str = DEVICE_KEYS["timezone"].default
    clock: str = DEVICE_KEYS["clock"].default

    @property
    def trusts_clock_at_boot(self) -> bool:
        """True for ``clock = "rtc"`` or ``"system"``: pulses are placed by the system clock
        from boot, without waiting for NTP."""
        return self.clock != "ntp"


_S, _U = STORAGE_KEYS, UPLOAD_KEYS


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``; defaults and documentation of every field: :data:`STORAGE_KEYS`."""

    path: str = _S["path"].default
    flush_interval_s: float = _S["flush_interval_s"].default
    event_retention_days: int = _S["event_retention_days"].default
    journal_retention_days: int = _S["journal_retention_days"].default


@dataclass(frozen=True)
class SensorConfig:
    """One ``[[sensors]]`` table; ``options`` are checked against :data:`SENSOR_KEYS`."""

    id: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadConfig:
    """``[upload]``; defaults and documentation of every field: :data:`UPLOAD_KEYS`."""

    url: str
    token_file: str
    period_minutes: int = _U["period_minutes"].default
    jitter_s: float = _U["jitter_s"].default
    batch_max: int = _U["batch_max"].default
    grace_s: float = _U["grace_s"].default
    timeout_s: float = _U["timeout_s"].default
    ca_file: str | None = _U["ca_file"].default
    allow_insecure_http: bool = _U["allow_insecure_http"].default
    max_backoff_s: float = _U["max_backoff_s"].default


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``; see :data:`REPORT_KEYS`."""

    visits: str = REPORT_KEYS["visits"].default


@dataclass(frozen=True)
class WebConfig:
    """``[web]``: the dashboard (``kiosk web``); see :data:`WEB_KEYS`."""

    listen: str = WEB_KEYS["listen"].default
    password_file: str | None = WEB_KEYS["password_file"].default
    public_read: bool = WEB_KEYS["public_read"].default
    cert_file: str | None = WEB_KEYS["cert_file"].default
    key_file: str | None = WEB_KEYS["key_file"].default


def web_problems(listen: str, password_file: str | None, cert_file: str | None,
                 key_file: str | None) -> list[KeyProblem]:
    """Checks spanning several ``[web]`` keys (also applied to ``kiosk web --listen``)."""
    problems = []
    try:
        host, _port = parse_listen(listen)
    except ValueError as e:
        return [KeyProblem("listen", str(e))]
    if not is_loopback(host) and not password_file:
        problems.append(KeyProblem(
            "password_file", f"listen {listen!r} is reachable from the network: set "
                             f"password_file and write it with `kiosk web --set-password`"))
    if (cert_file is None) != (key_file is None):
        problems.append(KeyProblem("cert_file" if cert_file is None else "key_file",
                                   "cert_file and key_file go together: give both or neither"))
    return problems


@dataclass(frozen=True)
class Config:
    device: DeviceConfig
    storage: StorageConfig
    sensors: tuple[SensorConfig, ...]
    upload: UploadConfig | None = None
    report: ReportConfig = ReportConfig()
    source: str = "<embedded>"
    web: WebConfig = WebConfig()

    @property
    def all_simulated(self) -> bool:
        return all(s.type in SIMULATED_TYPES for s in self.sensors)


def find_config_path(path: str | None = None) -> str:
    """``path`` if given, else ``$KIOSK_CONFIG``, else :data:`DEFAULT_PATH`."""
    return path or os.environ.get("KIOSK_CONFIG") or DEFAULT_PATH


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config file found by :func:`find_config_path`."""
    path = find_config_path(str(path) if path is not None else None)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; give --config PATH, set KIOSK_CONFIG, or copy "
            f"config/kiosk.example.toml there",
            path=path,
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}", path=path) from None
    return loads(text, source=path)


def load_embedded_demo(db_path: str) -> Config:
    """The embedded default: two simulated sensors and a local database at ``db_path``."""
    text = resources.files("kiosk").joinpath("demo.toml").read_text(encoding="utf-8")
    cfg = loads(text, source="<embedded demo config>")
    return Config(
        device=cfg.device,
        storage=StorageConfig(**{**cfg.storage.__dict__, "path": db_path}),
        sensors=cfg.sensors,
        upload=cfg.upload,
        report=cfg.report,
        source=cfg.source,
        web=cfg.web,
    )


def loads(text: str, *, source: str = "<string>") -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}", path=source) from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply",
                          path=source) from None
    return _Validator(source).config(data)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{value!r} ({type(value).__name__})"


def _type_ok(value: Any, types: Any) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # TOML true is not a number
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{self.source}: {where}: {text}")

    def table(self, data: dict, name: str, keys: Mapping[str, Key]) -> dict[str, Any]:
        """Check keys, types and ranges of one table; returns the values with defaults filled."""
        opts, problems = check_values(keys, data)
        for p in problems:
            self.problem(f"{name} {p.key}", p.text)
        return opts

    def config(self, data: dict[str, Any]) -> Config:
        known = {"device", "storage", "sensors", "upload", "report", "web"}
        for key in data:
            if key not in known:
                self.problem(key, f"unknown section; expected one of: {', '.join(sorted(known))}")
        device = self.device(self.section(data, "device", required=True))
        storage = self.storage(self.section(data, "storage"))
        sensors = self.sensors(data.get("sensors"))
        upload = self.upload(data["upload"]) if "upload" in data else None
        report = self.report(self.section(data, "report"))
        web = self.web(self.section(data, "web"))
        if self.problems:
            raise ConfigError(self.problems, path=self.source)
        return Config(device, storage, tuple(sensors), upload, report, self.source, web)

    def section(self, data: dict, name: str, *, required: bool = False) -> dict:
        value = data.get(name)
        if value is None:
            if required:
                self.problem(f"[{name}]", "missing section")
            return {}
        if not isinstance(value, dict):
            self.problem(f"[{name}]", f"expected a table, found {_describe(value)}")
            return {}
        return value

    def device(self, data: dict) -> DeviceConfig:
        opts = self.table(data, "[device]", DEVICE_KEYS)
        for key in ("id", "site"):
            if data and key not in data:
                self.problem(f"[device] {key}", "missing; it identifies this kiosk in uploads")
        return DeviceConfig(opts.get("id") or "", opts.get("site") or "",
                            opts.get("timezone", DEFAULT_TIMEZONE),
                            opts.get("clock", DEVICE_KEYS["clock"].default))

    def storage(self, data: dict) -> StorageConfig:
        opts = self.table(data, "[storage]", STORAGE_KEYS)
        return StorageConfig(**opts) if len(opts) == len(STORAGE_KEYS) else StorageConfig()

    def sensors(self, value: Any) -> list[SensorConfig]:
        if value is None:
            self.problem("[[sensors]]", "no sensors configured; add at least one [[sensors]] table")
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem("sensors", "expected [[sensors]] tables, found " + _describe(value))
            return []
        out: list[SensorConfig] = []
        ids: dict[str, int] = {}
        pins: dict[int, str] = {}
        for n, raw in enumerate(value, 1):
            sid = raw.get("id")
            where = f"[[sensors]] #{n}" + (f" (id {sid!r})" if isinstance(sid, str) else "")
            if not isinstance(sid, str) or not _ID_RE.fullmatch(sid):
                self.problem(
                    f"{where} id",
                    f"expected {_ID_EXPECTED}, found "
                    + ("nothing" if sid is None else _describe(sid)),
                )
            elif sid in ids:
                self.problem(f"{where} id", f"duplicate sensor id; #{ids[sid]} has it already")
            else:
                ids[sid] = n
            stype = raw.get("type")
            if stype not in SENSOR_TYPES:
                self.problem(
                    f"{where} type",
                    f"expected one of {', '.join(SENSOR_TYPES)}, found "
                    + ("nothing" if stype is None else _describe(stype)),
                )
                continue
            keys = SENSOR_KEYS[stype]
            rest = {k: v for k, v in raw.items() if k not in ("id", "type")}
            opts = self.table(rest, where, keys)
            for key in (k for k, spec in keys.items() if spec.default is REQUIRED):
                if key not in rest:
                    self.problem(f"{where} {key}", f"missing; expected {keys[key].expected}")
            for p in cross_check(stype, opts):
                self.problem(f"{where} {p.key}", p.text)
            for key, pin, given in _pins_of(opts, rest):
                if pin in pins:
                    self.problem(f"{where} {key}",
                                 f"pin {given!r} is already used by {pins[pin]}")
                else:
                    pins[pin] = f"sensor {sid!r} {key}"
            opts = {k: v for k, v in opts.items() if v is not None}
            out.append(SensorConfig(sid if isinstance(sid, str) else "", stype, opts))
        return out

    def upload(self, value: Any) -> UploadConfig | None:
        if not isinstance(value, dict):
            self.problem("[upload]", f"expected a table, found {_describe(value)}")
            return None
        opts = self.table(value, "[upload]", UPLOAD_KEYS)
        for key in ("url", "token_file"):
            if key not in value:
                self.problem(f"[upload] {key}", "missing; without [upload] nothing is uploaded")
        url = opts.get("url")
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                self.problem("[upload] url", f"expected an https:// URL, found {url!r}")
            elif (parts.scheme == "http" and not opts.get("allow_insecure_http")
                  and not is_loopback(parts.hostname)):
                self.problem(
                    "[upload] url",
                    f"plain http:// sends the token unencrypted; use https:// or set "
                    f"allow_insecure_http = true, found {url!r}",
                )
        if self.problems or not url:
            return None
        return UploadConfig(**opts)

    def report(self, data: dict) -> ReportConfig:
        opts = self.table(data, "[report]", REPORT_KEYS)
        return ReportConfig(**opts) if len(opts) == len(REPORT_KEYS) else ReportConfig()

    def web(self, data: dict) -> WebConfig:
        return _web_section(self, data)


def _pins_of(opts: Mapping[str, Any], raw: Mapping[str, Any]) -> list[tuple[str, int, Any]]:
    """(key, BCM pin, pin as written) of every pin a sensor's checked ``opts`` use."""
    out = [(key, opts[key], raw[key]) for key in ("pin", "pin_a", "pin_b", "led_pin")
           if opts.get(key) is not None]
    for level, pin in (opts.get("buttons") or {}).items():
        out.append((f"buttons.{level}", pin, raw["buttons"][level]))
    return out


def _web_section(v: _Validator, data: dict) -> WebConfig:
    opts = v.table(data, "[web]", WEB_KEYS)
    if len(opts) != len(WEB_KEYS):
        return WebConfig()
    for p in web_problems(opts["listen"], opts["password_file"], opts["cert_file"],
                          opts["key_file"]):
        v.problem(f"[web] {p.key}", p.text)
    return WebConfig(**opts)


def is_loopback(host: str) -> bool:
    """True for localhost and the 127.0.0.0/8 and ::1 addresses."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _close(a: str, b: str) -> bool:
    """A cheap 'did you mean': same letters give or take one edit."""
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.8
