"""Loading and validating the TOML configuration.

Every problem is reported at once, one line each, naming the file, the key, what
was expected and what was found.  Unknown keys are errors: a typo must never fall
back silently to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kiosk.exc import ConfigError

DEFAULT_PATH = "/etc/kiosk/kiosk.toml"
#: The time zone of local labels when neither the config nor the database says otherwise.
DEFAULT_TIMEZONE = "Europe/Helsinki"
SENSOR_TYPES = ("gpio", "gpio-pair", "serial", "simulated")
PERIOD_MINUTES = (15, 30, 60)

_NUM = (int, float)
_PIN = (int, str)

# Per-type sensor options: name -> (accepted types, default, description of what is expected).
_COMMON_GPIO = {
    "pull_up": (bool, True, "true or false"),
    "active_high": (bool, None, "true or false"),
    "min_pulse_ms": (_NUM, 30, "a number of milliseconds ≥ 0"),
    "holdoff_ms": (_NUM, 50, "a number of milliseconds ≥ 0"),
    "stuck_after_s": (_NUM, 30, "a number of seconds > 0"),
}
SENSOR_OPTIONS: dict[str, dict[str, tuple[Any, Any, str]]] = {
    "gpio": {
        "pin": (_PIN, None, "a BCM pin number such as 17, or a name such as 'GPIO17'"),
        "direction": (str, "in", "'in' or 'out'"),
        **_COMMON_GPIO,
    },
    "gpio-pair": {
        "pin_a": (_PIN, None, "a BCM pin number such as 17"),
        "pin_b": (_PIN, None, "a BCM pin number such as 27"),
        "max_transit_ms": (_NUM, 1500, "a number of milliseconds > 0"),
        "invert": (bool, False, "true or false"),
        **_COMMON_GPIO,
    },
    "serial": {
        "port": (str, None, "a device path such as '/dev/serial/by-id/…' or a pyserial URL"),
        "baudrate": (int, 9600, "a baud rate such as 9600"),
        "mode": (str, "events", "'events' or 'cumulative'"),
        "pattern": (str, None, "a regular expression with named groups"),
        "reconnect_min_s": (_NUM, 1.0, "a number of seconds > 0"),
        "reconnect_max_s": (_NUM, 60.0, "a number of seconds > 0"),
    },
    "simulated": {
        "weekday_visits": (_NUM, 5500, "visits per weekday, a number ≥ 0"),
        "weekend_visits": (_NUM, 2000, "visits per weekend day, a number ≥ 0"),
        "weekday_hours": (str, "08:00-20:00", "opening hours such as '08:00-20:00'"),
        "weekend_hours": (str, "10:00-18:00", "opening hours such as '10:00-18:00'"),
        "mean_stay_min": (_NUM, 25, "a number of minutes > 0"),
        "seed": (int, None, "an integer"),
    },
}
REQUIRED_SENSOR_OPTIONS = {"gpio": ("pin",), "gpio-pair": ("pin_a", "pin_b"), "serial": ("port",)}


@dataclass(frozen=True)
class DeviceConfig:
    id: str
    site: str
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True)
class StorageConfig:
    path: str = "/var/lib/kiosk/counts.db"
    #: Seconds between flushes of pending counts to SQLite.
    flush_interval_s: float = 2.0
    #: Days to keep the raw event log (per-pulse rows).
    event_retention_days: int = 30
    #: Days to keep the local journal of daemon happenings.
    journal_retention_days: int = 365


@dataclass(frozen=True)
class SensorConfig:
    id: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UploadConfig:
    url: str
    token_file: str
    period_minutes: int = 60
    #: Random delay (s) after a period closes before uploading, spreads a fleet's load.
    jitter_s: float = 300.0
    batch_max: int = 200
    #: Seconds after a period ends before it is considered closed (lets counts flush).
    grace_s: float = 10.0
    #: Connect and read timeout of one request, seconds.
    timeout_s: float = 30.0
    ca_file: str | None = None
    allow_insecure_http: bool = False
    #: Cap of the retry backoff, seconds.
    max_backoff_s: float = 3600.0


@dataclass(frozen=True)
class ReportConfig:
    #: "in" counts entries; "in+out/2" halves both directions for sensors without direction.
    visits: str = "in"


@dataclass(frozen=True)
class Config:
    device: DeviceConfig
    storage: StorageConfig
    sensors: tuple[SensorConfig, ...]
    upload: UploadConfig | None = None
    report: ReportConfig = ReportConfig()
    source: str = "<embedded>"

    @property
    def all_simulated(self) -> bool:
        return all(s.type == "simulated" for s in self.sensors)


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
    )


def loads(text: str, *, source: str = "<string>") -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}", path=source) from None
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


def pin_key(pin: int | str) -> str:
    """A normal form of a pin so that 17, 'GPIO17' and 'BCM17' compare equal."""
    if isinstance(pin, int):
        return f"GPIO{pin}"
    m = re.fullmatch(r"(?:GPIO|BCM)?(\d+)", pin.strip().upper())
    return f"GPIO{int(m.group(1))}" if m else pin.strip().upper()


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{self.source}: {where}: {text}")

    def table(self, data: dict, name: str, allowed: dict[str, tuple]) -> dict[str, Any]:
        """Check keys and types of one table; returns the options with defaults filled."""
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key not in allowed:
                near = [k for k in allowed if _close(k, key)]
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self.problem(
                    f"{name} {key}",
                    f"unknown key{hint}; expected one of: {', '.join(sorted(allowed))}",
                )
                continue
            types, _default, expected = allowed[key]
            if not _type_ok(value, types):
                self.problem(f"{name} {key}", f"expected {expected}, found {_describe(value)}")
                continue
            out[key] = value
        for key, (_types, default, _e) in allowed.items():
            out.setdefault(key, default)
        return out

    def positive(self, where: str, value: float, *, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            self.problem(where, f"expected a number {'≥' if allow_zero else '>'} 0, found {value!r}")

    def config(self, data: dict[str, Any]) -> Config:
        known = {"device", "storage", "sensors", "upload", "report"}
        for key in data:
            if key not in known:
                self.problem(key, f"unknown section; expected one of: {', '.join(sorted(known))}")
        device = self.device(self.section(data, "device", required=True))
        storage = self.storage(self.section(data, "storage"))
        sensors = self.sensors(data.get("sensors"))
        upload = self.upload(data["upload"]) if "upload" in data else None
        report = self.report(self.section(data, "report"))
        if self.problems:
            raise ConfigError(self.problems, path=self.source)
        return Config(device, storage, tuple(sensors), upload, report, self.source)

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
        opts = self.table(data, "[device]", {
            "id": (str, None, "a device id such as 'espoo-isoomena-01'"),
            "site": (str, None, "a site id such as 'iso-omena-service-centre'"),
            "timezone": (str, DEFAULT_TIMEZONE, "an IANA time zone such as 'Europe/Helsinki'"),
        })
        for key in ("id", "site"):
            if data and key not in data:
                self.problem(f"[device] {key}", "missing; it identifies this kiosk in uploads")
            elif opts[key] is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", opts[key]):
                self.problem(
                    f"[device] {key}",
                    f"expected 1-64 letters, digits, '.', '_', ':' or '-', found {opts[key]!r}",
                )
        try:
            ZoneInfo(opts["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(
                "[device] timezone",
                f"expected an IANA time zone such as 'Europe/Helsinki', found {opts['timezone']!r}",
            )
        return DeviceConfig(opts["id"] or "", opts["site"] or "", opts["timezone"])

    def storage(self, data: dict) -> StorageConfig:
        opts = self.table(data, "[storage]", {
            "path": (str, StorageConfig.path, "a file path such as '/var/lib/kiosk/counts.db'"),
            "flush_interval_s": (_NUM, 2.0, "a number of seconds > 0"),
            "event_retention_days": (int, 30, "a whole number of days ≥ 1"),
            "journal_retention_days": (int, 365, "a whole number of days ≥ 1"),
        })
        if not 0 < opts["flush_interval_s"] <= 60:
            self.problem(
                "[storage] flush_interval_s",
                f"expected seconds between 0 and 60 (a kill -9 loses at most this much), "
                f"found {opts['flush_interval_s']!r}",
            )
        for key in ("event_retention_days", "journal_retention_days"):
            if opts[key] < 1:
                self.problem(f"[storage] {key}", f"expected a whole number ≥ 1, found {opts[key]!r}")
        return StorageConfig(**opts)

    def sensors(self, value: Any) -> list[SensorConfig]:
        if value is None:
            self.problem("[[sensors]]", "no sensors configured; add at least one [[sensors]] table")
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem("sensors", "expected [[sensors]] tables, found " + _describe(value))
            return []
        out: list[SensorConfig] = []
        ids: dict[str, int] = {}
        pins: dict[str, str] = {}
        for n, raw in enumerate(value, 1):
            sid = raw.get("id")
            where = f"[[sensors]] #{n}" + (f" (id {sid!r})" if isinstance(sid, str) else "")
            if not isinstance(sid, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", sid):
                self.problem(
                    f"{where} id",
                    "expected 1-64 letters, digits, '.', '_', ':' or '-', found "
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
            rest = {k: v for k, v in raw.items() if k not in ("id", "type")}
            opts = self.table(rest, where, SENSOR_OPTIONS[stype])
            for key in REQUIRED_SENSOR_OPTIONS.get(stype, ()):
                if key not in rest:
                    self.problem(f"{where} {key}", f"missing; expected {SENSOR_OPTIONS[stype][key][2]}")
            self.sensor_values(where, stype, opts, sid, pins)
            opts = {k: v for k, v in opts.items() if v is not None}
            out.append(SensorConfig(sid if isinstance(sid, str) else "", stype, opts))
        return out

    def sensor_values(self, where: str, stype: str, opts: dict, sid: Any, pins: dict) -> None:
        for key in ("min_pulse_ms", "holdoff_ms"):
            if opts.get(key) is not None:
                self.positive(f"{where} {key}", opts[key], allow_zero=True)
        for key in ("stuck_after_s", "max_transit_ms", "reconnect_min_s", "reconnect_max_s"):
            if opts.get(key) is not None:
                self.positive(f"{where} {key}", opts[key])
        for key in ("pin", "pin_a", "pin_b"):
            pin = opts.get(key)
            if pin is None:
                continue
            norm = pin_key(pin)
            if norm in pins:
                self.problem(f"{where} {key}", f"pin {pin!r} is already used by {pins[norm]}")
            else:
                pins[norm] = f"sensor {sid!r} {key}"
        if stype == "gpio" and opts["direction"] not in ("in", "out"):
            self.problem(f"{where} direction", f"expected 'in' or 'out', found {opts['direction']!r}")
        if stype == "serial":
            if opts["mode"] not in ("events", "cumulative"):
                self.problem(
                    f"{where} mode", f"expected 'events' or 'cumulative', found {opts['mode']!r}"
                )
            elif opts.get("pattern") is not None:
                from kiosk.sensors.serial import validate_pattern

                try:
                    validate_pattern(opts["pattern"], opts["mode"])
                except ConfigError as e:
                    self.problem(f"{where} pattern", str(e))
            if opts["baudrate"] <= 0:
                self.problem(f"{where} baudrate", f"expected a baud rate > 0, found {opts['baudrate']}")
        if stype == "simulated":
            from kiosk.sensors.simulated import SimulatedSensor

            try:
                SimulatedSensor.validate_options(
                    str(sid), **{k: v for k, v in opts.items() if v is not None})
            except ConfigError as e:
                for p in e.problems:
                    self.problems.append(f"{self.source}: {where}: {p.split(': ', 1)[-1]}")

    def upload(self, value: Any) -> UploadConfig | None:
        if not isinstance(value, dict):
            self.problem("[upload]", f"expected a table, found {_describe(value)}")
            return None
        opts = self.table(value, "[upload]", {
            "url": (str, None, "an https:// URL"),
            "token_file": (str, None, "a path to a file holding the bearer token"),
            "period_minutes": (int, 60, "15, 30 or 60"),
            "jitter_s": (_NUM, 300.0, "a number of seconds ≥ 0"),
            "batch_max": (int, 200, "a whole number between 1 and 1000"),
            "grace_s": (_NUM, 10.0, "a number of seconds ≥ 0"),
            "timeout_s": (_NUM, 30.0, "a number of seconds > 0"),
            "ca_file": (str, None, "a path to a PEM file of a private CA"),
            "allow_insecure_http": (bool, False, "true or false"),
            "max_backoff_s": (_NUM, 3600.0, "a number of seconds > 0"),
        })
        for key in ("url", "token_file"):
            if key not in value:
                self.problem(f"[upload] {key}", "missing; without [upload] nothing is uploaded")
        url = opts["url"]
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                self.problem("[upload] url", f"expected an https:// URL, found {url!r}")
            elif (parts.scheme == "http" and not opts["allow_insecure_http"]
                  and not is_loopback(parts.hostname)):
                self.problem(
                    "[upload] url",
                    f"plain http:// sends the token unencrypted; use https:// or set "
                    f"allow_insecure_http = true, found {url!r}",
                )
        if opts["period_minutes"] not in PERIOD_MINUTES:
            self.problem(
                "[upload] period_minutes", f"expected 15, 30 or 60, found {opts['period_minutes']!r}"
            )
        if not 1 <= opts["batch_max"] <= 1000:
            self.problem("[upload] batch_max", f"expected 1 to 1000, found {opts['batch_max']!r}")
        for key in ("jitter_s", "grace_s"):
            self.positive(f"[upload] {key}", opts[key], allow_zero=True)
        for key in ("timeout_s", "max_backoff_s"):
            self.positive(f"[upload] {key}", opts[key])
        if self.problems or not url:
            return None
        return UploadConfig(**opts)

    def report(self, data: dict) -> ReportConfig:
        opts = self.table(data, "[report]", {"visits": (str, "in", "'in' or 'in+out/2'")})
        if opts["visits"] not in ("in", "in+out/2"):
            self.problem("[report] visits", f"expected 'in' or 'in+out/2', found {opts['visits']!r}")
        return ReportConfig(**opts)


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
