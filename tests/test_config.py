"""Config loading: every error class gets one clear line naming file, key, expected, found."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kiosk import config
from kiosk.cli import cli
from kiosk.exc import ConfigError

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[device]
id = "espoo-isoomena-01"
site = "iso-omena-service-centre"
timezone = "Europe/Helsinki"
[storage]
path = "/tmp/x.db"
[[sensors]]
id = "main-entrance"
type = "gpio"
pin = 17
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config.loads(text, source="k.toml")
    return e.value.problems


def test_example_config_is_valid():
    cfg = config.load(ROOT / "config" / "kiosk.example.toml")
    assert [s.type for s in cfg.sensors] == ["gpio", "serial"]
    assert cfg.upload is not None and cfg.upload.period_minutes == 60
    assert cfg.storage.flush_interval_s == 2


def test_example_config_documents_every_key():
    text = (ROOT / "config" / "kiosk.example.toml").read_text()
    keys = {k for opts in config.SENSOR_KEYS.values() for k in opts}
    keys |= set(config.StorageConfig.__dataclass_fields__)
    keys |= set(config.UploadConfig.__dataclass_fields__) | {"visits", "timezone", "site"}
    keys |= set(config.WebConfig.__dataclass_fields__)
    missing = [k for k in keys if f"{k} =" not in text]
    assert not missing, f"keys not documented in the example config: {missing}"


def test_defaults():
    cfg = config.loads(GOOD)
    s = cfg.sensors[0]
    assert s.options["pin"] == 17 and s.options["min_pulse_ms"] == 30
    assert "active_high" not in s.options  # None means "derive from pull_up"
    assert cfg.upload is None
    assert cfg.storage.event_retention_days == 30
    assert cfg.report.visits == "in"


def test_not_toml():
    (p,) = problems("[device\nid=1")
    assert p.startswith("k.toml: not valid TOML")


def test_unknown_key_is_rejected_with_suggestion():
    (p,) = problems(GOOD.replace("pin = 17", "pin = 17\nholdof_ms = 3"))
    assert "k.toml: [[sensors]] #1 (id 'main-entrance') holdof_ms: unknown key" in p
    assert "did you mean 'holdoff_ms'" in p


def test_unknown_section():
    (p,) = problems(GOOD + "[uplod]\nurl='x'\n")
    assert "uplod: unknown section" in p


def test_wrong_types_say_expected_and_found():
    ps = problems(GOOD.replace("pin = 17", "pin = 17\npull_up = 'yes'\nmin_pulse_ms = true"))
    assert any("pull_up: expected true or false, found 'yes' (a string)" in p for p in ps)
    assert any("min_pulse_ms: expected a number of milliseconds ≥ 0, found true" in p for p in ps)


def test_every_problem_reported_at_once():
    text = """
[device]
id = "x"
site = "y"
timezone = "Mars/Olympus"
[storage]
flush_interval_s = 0
[[sensors]]
id = "a"
type = "gpio"
pin = 17
[[sensors]]
id = "a"
type = "gpio"
pin = "GPIO17"
[[sensors]]
id = "b"
type = "serial"
[[sensors]]
id = "c"
type = "laser"
"""
    ps = problems(text)
    joined = "\n".join(ps)
    assert len(ps) == 6, joined
    assert "timezone: expected an IANA time zone" in joined
    assert "flush_interval_s: expected seconds between 0 and 60" in joined
    assert "id: duplicate sensor id; #1 has it already" in joined
    assert "pin: pin 'GPIO17' is already used by sensor 'a' pin" in joined
    assert "(id 'b') port: missing" in joined
    assert ("(id 'c') type: expected one of gpio, gpio-pair, serial, simulated, feedback, "
            "feedback-simulated, found 'laser'") in joined


def test_duplicate_pins_across_pair():
    ps = problems(GOOD + '[[sensors]]\nid = "p"\ntype = "gpio-pair"\npin_a = 22\npin_b = "BCM17"\n')
    assert any("pin_b: pin 'BCM17' is already used by sensor 'main-entrance' pin" in p for p in ps)


def test_missing_device_and_sensors():
    ps = problems("[storage]\npath='x'\n")
    assert any("[device]: missing section" in p for p in ps)
    assert any("no sensors configured" in p for p in ps)


def test_bad_ids():
    ps = problems(GOOD.replace('id = "main-entrance"', 'id = "main entrance!"'))
    assert any("expected 1-64 letters, digits" in p for p in ps)


def test_serial_pattern_is_checked():
    ps = problems(GOOD.replace('type = "gpio"\npin = 17',
                               'type = "serial"\nport = "loop://"\npattern = "(?P<dir>in)"'))
    assert any("pattern" in p and "direction" in p for p in ps)
    ps = problems(GOOD.replace('type = "gpio"\npin = 17',
                               'type = "serial"\nport = "loop://"\nmode = "totals"'))
    assert any("mode: expected 'events' or 'cumulative', found 'totals'" in p for p in ps)


@pytest.mark.parametrize("url,extra,msg", [
    ("ftp://x/y", "", "expected an https:// URL"),
    ("http://stats.example.org/x", "", "plain http:// sends the token unencrypted"),
    ("https://stats.example.org/x", "period_minutes = 20\n", "expected 15, 30 or 60"),
    ("https://stats.example.org/x", "batch_max = 0\n", "expected 1 to 1000"),
])
def test_upload_errors(url, extra, msg):
    ps = problems(GOOD + f'[upload]\nurl = "{url}"\ntoken_file = "/t"\n{extra}')
    assert any(msg in p for p in ps), ps


def test_upload_http_allowed_to_loopback_or_explicitly():
    cfg = config.loads(GOOD + '[upload]\nurl = "http://127.0.0.1:8080/x"\ntoken_file = "/t"\n')
    assert cfg.upload.url.startswith("http://127.0.0.1")
    cfg = config.loads(GOOD + '[upload]\nurl = "http://stats.lan/x"\ntoken_file = "/t"\n'
                       "allow_insecure_http = true\n")
    assert cfg.upload.allow_insecure_http


def test_upload_needs_url_and_token():
    ps = problems(GOOD + "[upload]\nperiod_minutes = 60\n")
    assert any("[upload] url: missing" in p for p in ps)
    assert any("[upload] token_file: missing" in p for p in ps)


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("KIOSK_CONFIG", raising=False)
    assert config.find_config_path(None) == "/etc/kiosk/kiosk.toml"
    monkeypatch.setenv("KIOSK_CONFIG", str(tmp_path / "env.toml"))
    assert config.find_config_path(None) == str(tmp_path / "env.toml")
    assert config.find_config_path("given.toml") == "given.toml"


def test_missing_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file; give --config PATH"):
        config.load(tmp_path / "none.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "bin.toml")


def test_check_config_command(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = CliRunner().invoke(cli, ["check-config", str(good)])
    assert r.exit_code == 0, r.output
    assert "OK: device espoo-isoomena-01" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("pin = 17", "pin = 17\npni = 3\nholdoff_ms = -5"))
    r = CliRunner().invoke(cli, ["check-config", str(bad)])
    assert r.exit_code == 2
    assert f"kiosk: error: {bad}: [[sensors]] #1 (id 'main-entrance') pni: unknown key" in r.output
    assert "2 problems in the configuration" in r.output
    assert "Traceback" not in r.output


def test_check_config_uses_env(tmp_path, monkeypatch):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    monkeypatch.setenv("KIOSK_CONFIG", str(good))
    r = CliRunner().invoke(cli, ["check-config"])
    assert r.exit_code == 0 and str(good) in r.output


# -- one schema: check-config and run accept exactly the same configs ------------------------

SERIAL = GOOD.replace('type = "gpio"\npin = 17', 'type = "serial"\nport = "loop://"')
PAIR = GOOD.replace('type = "gpio"\npin = 17', 'type = "gpio-pair"\npin_a = 22\npin_b = 27')
SIM = GOOD.replace('type = "gpio"\npin = 17', 'type = "simulated"\nseed = 1')
UPLOAD = GOOD + '[upload]\nurl = "https://stats.example.org/x"\ntoken_file = "/t"\n'
NESTED = GOOD + "deep = " + "[" * 5000 + "]" * 5000 + "\n"

#: (name, config text, the key named in the one-line refusal or None if accepted)
PARITY = [
    ("good gpio", GOOD, None),
    ("good serial", SERIAL, None),
    ("good pair", PAIR, None),
    ("good simulated", SIM, None),
    ("good upload", UPLOAD, None),
    ("pin as GPIO name", GOOD.replace("pin = 17", 'pin = "GPIO17"'), None),
    ("pin as BCM name", GOOD.replace("pin = 17", 'pin = "bcm27"'), None),
    ("pin 0", GOOD.replace("pin = 17", "pin = 0"), None),
    ("pin -5", GOOD.replace("pin = 17", "pin = -5"), "pin"),
    ("pin 28", GOOD.replace("pin = 17", "pin = 28"), "pin"),
    ("pin 99999", GOOD.replace("pin = 17", "pin = 99999"), "pin"),
    ("pin GPIO999", GOOD.replace("pin = 17", 'pin = "GPIO999"'), "pin"),
    ("pin banana", GOOD.replace("pin = 17", 'pin = "banana"'), "pin"),
    ("pin float", GOOD.replace("pin = 17", "pin = 17.0"), "pin"),
    ("pair same pin", PAIR.replace("pin_b = 27", 'pin_b = "GPIO22"'), "pin_b"),
    ("pair pin_b banana", PAIR.replace("pin_b = 27", 'pin_b = "banana"'), "pin_b"),
    ("stuck nan", GOOD + "stuck_after_s = nan\n", "stuck_after_s"),
    ("stuck inf", GOOD + "stuck_after_s = inf\n", "stuck_after_s"),
    ("holdoff -inf", GOOD + "holdoff_ms = -inf\n", "holdoff_ms"),
    ("min_pulse nan", GOOD + "min_pulse_ms = nan\n", "min_pulse_ms"),
    ("transit 0", PAIR + "max_transit_ms = 0\n", "max_transit_ms"),
    ("transit nan", PAIR + "max_transit_ms = nan\n", "max_transit_ms"),
    ("reconnect max < min", SERIAL + "reconnect_min_s = 10\nreconnect_max_s = 5\n",
     "reconnect_max_s"),
    ("reconnect max nan", SERIAL + "reconnect_max_s = nan\n", "reconnect_max_s"),
    ("reconnect min inf", SERIAL + "reconnect_min_s = inf\n", "reconnect_min_s"),
    ("reconnect max = min", SERIAL + "reconnect_min_s = 5\nreconnect_max_s = 5\n", None),
    ("baudrate 0", SERIAL + "baudrate = 0\n", "baudrate"),
    ("bad pattern", SERIAL + 'pattern = "(?P<dir>in)"\n', "pattern"),
    ("counter_bits 24", SERIAL + "counter_bits = 24\n", "counter_bits"),
    ("counter_bits '16'", SERIAL + 'counter_bits = "16"\n', "counter_bits"),
    ("counter_bits true", SERIAL + "counter_bits = true\n", "counter_bits"),
    ("counter_bits 32", SERIAL + "counter_bits = 32\n", None),
    ("max_jump 0", SERIAL + "max_jump = 0\n", "max_jump"),
    ("max_jump 2.5", SERIAL + "max_jump = 2.5\n", "max_jump"),
    ("offline < jump", SERIAL + "max_jump = 500\nmax_offline_jump = 100\n", "max_offline_jump"),
    ("offline = jump", SERIAL + "max_jump = 500\nmax_offline_jump = 500\n", None),
    ("sim visits nan", SIM + "weekday_visits = nan\n", "weekday_visits"),
    ("sim stay inf", SIM + "mean_stay_min = inf\n", "mean_stay_min"),
    ("sim hours", SIM + 'weekend_hours = "18:00-10:00"\n', "weekend_hours"),
    ("grace inf", UPLOAD + "grace_s = inf\n", "grace_s"),
    ("grace 3601", UPLOAD + "grace_s = 3601\n", "grace_s"),
    ("timeout 1e300", UPLOAD + "timeout_s = 1e300\n", "timeout_s"),
    ("timeout 0", UPLOAD + "timeout_s = 0\n", "timeout_s"),
    ("timeout 600", UPLOAD + "timeout_s = 600\n", None),
    ("jitter nan", UPLOAD + "jitter_s = nan\n", "jitter_s"),
    ("max_backoff nan", UPLOAD + "max_backoff_s = nan\n", "max_backoff_s"),
    ("max_backoff 1e9", UPLOAD + "max_backoff_s = 1e9\n", "max_backoff_s"),
    ("flush nan", GOOD.replace('path = "/tmp/x.db"', 'path = "/tmp/x.db"\nflush_interval_s = nan'),
     "flush_interval_s"),
    ("nested TOML", NESTED, "not valid TOML"),
]


def _run_refuses(text: str) -> str | None:
    """What ``kiosk run`` does with ``text`` up to counting: load, build, open the pins.

    Returns the refusal (one line per problem) or None.  GPIO pins are opened on a
    gpiozero MockFactory; serial ports are not opened (a missing port is not a config
    problem: the sensor goes down and retries).
    """
    from gpiozero.pins.mock import MockFactory

    from kiosk.clock import SystemClock
    from kiosk.exc import SensorError
    from kiosk.sensors import build_sensors

    try:
        cfg = config.loads(text, source="k.toml")
        factory = MockFactory()
        sensors = build_sensors(cfg, emit=lambda m: None, clock=SystemClock(),
                                pin_factory=factory)
        try:
            for s in sensors:
                if s.kind.startswith("gpio"):
                    s.start()
        finally:
            for s in sensors:
                if s.kind.startswith("gpio"):
                    s.close()
            factory.close()
    except (ConfigError, SensorError) as e:
        return str(e)
    if cfg.upload is not None:  # the uploader's arithmetic: sleeps, timeouts, backoff
        import math

        up = cfg.upload
        for value in (up.jitter_s, up.grace_s, up.timeout_s, up.max_backoff_s):
            assert math.isfinite(value) and 0 <= value <= 86400
    return None


@pytest.mark.parametrize(("name", "text", "key"), PARITY, ids=[p[0] for p in PARITY])
def test_check_config_and_run_accept_the_same(tmp_path, name, text, key):
    path = tmp_path / "k.toml"
    path.write_text(text)
    r = CliRunner().invoke(cli, ["check-config", str(path)])
    refused = _run_refuses(text)
    assert "Traceback" not in r.output and not isinstance(r.exception, RecursionError)
    if key is None:
        assert r.exit_code == 0, r.output
        assert refused is None, refused
        return
    assert r.exit_code == 2, r.output
    assert refused is not None, f"run accepts what check-config refuses: {r.output}"
    lines = [line for line in r.output.splitlines() if line.startswith("kiosk: error:")]
    assert lines and all(str(path) in line for line in lines), r.output
    assert any(key in line and ("expected" in line or "TOML" in line or "already used" in line)
               for line in lines), r.output
    assert key in refused


def test_nested_toml_is_one_line():
    (p,) = problems(NESTED)
    assert p == "k.toml: not valid TOML: arrays or tables nested too deeply"


@pytest.mark.parametrize(("value", "found"), [
    ("-5", "found -5 (int)"), ("99999", "found 99999 (int)"), ('"banana"', "found 'banana'"),
    ("true", "found true (a boolean)"),
])
def test_bad_pins_say_expected_and_found(value, found):
    (p,) = problems(GOOD.replace("pin = 17", f"pin = {value}"))
    assert p.startswith("k.toml: [[sensors]] #1 (id 'main-entrance') pin: expected a BCM pin "
                        "number 0-27"), p
    assert found in p


@pytest.mark.parametrize("pin", [17, "17", "GPIO17", "gpio17", " BCM17 "])
def test_one_pin_normaliser(pin):
    assert config.normalise_pin(pin) == 17
    assert config.pin_key(pin) == "GPIO17"
    cfg = config.loads(GOOD.replace("pin = 17", f"pin = {pin!r}".replace("'", '"')))
    assert cfg.sensors[0].options["pin"] == 17  # what gpiozero gets: a BCM number


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e300"])
@pytest.mark.parametrize("key", [k for k, spec in config.UPLOAD_KEYS.items() if float in spec.types])
def test_every_upload_float_refuses_non_finite_and_huge(key, text):
    (p,) = problems(UPLOAD + f"{key} = {text}\n")
    assert p.startswith(f"k.toml: [upload] {key}: expected a number of seconds"), p


def test_every_float_key_refuses_nan():
    sections = {"[storage]": ("", config.STORAGE_KEYS), "[upload]": ("", config.UPLOAD_KEYS)}
    for name, (_, keys) in sections.items():
        for key, spec in keys.items():
            if float in spec.types:
                base = UPLOAD if name == "[upload]" else GOOD
                text = base.replace("[storage]\n", f"[storage]\n{key} = nan\n") \
                    if name == "[storage]" else base + f"{key} = nan\n"
                assert any(f"{key}: expected" in p for p in problems(text)), key
    bases = {"gpio": GOOD, "gpio-pair": PAIR, "serial": SERIAL, "simulated": SIM,
             "feedback": GOOD.replace('type = "gpio"\npin = 17',
                                      'type = "feedback"\nbuttons = { a = 5, b = 6 }'),
             "feedback-simulated": SIM.replace('"simulated"', '"feedback-simulated"')}
    for stype, keys in config.SENSOR_KEYS.items():
        for key, spec in keys.items():
            if float in spec.types:
                assert any(f"{key}: expected" in p for p in problems(bases[stype] + f"{key} = nan\n")), \
                    (stype, key)


def test_reconnect_max_below_min_is_refused_like_the_sensor_does():
    (p,) = problems(SERIAL + "reconnect_min_s = 10\nreconnect_max_s = 5\n")
    assert p == ("k.toml: [[sensors]] #1 (id 'main-entrance') reconnect_max_s: expected a number "
                 "of seconds ≥ reconnect_min_s (10), found 5")


def _field_defaults(cls) -> dict:
    import dataclasses

    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def test_dataclass_defaults_come_from_the_schema():
    for cls, keys in ((config.StorageConfig, config.STORAGE_KEYS),
                      (config.UploadConfig, config.UPLOAD_KEYS),
                      (config.ReportConfig, config.REPORT_KEYS),
                      (config.DeviceConfig, config.DEVICE_KEYS)):
        fields = {f for f in cls.__dataclass_fields__}
        assert fields == set(keys), cls
        for name, spec in keys.items():
            default = _field_defaults(cls).get(name, config.REQUIRED)
            assert default == spec.default or default is spec.default, (cls, name)


def test_sensor_defaults_come_from_the_schema():
    import inspect

    from kiosk.sensors.gpio import GPIOPairSensor, GPIOSensor
    from kiosk.sensors.serial import SerialSensor
    from kiosk.sensors.simulated import DEFAULTS, SimulatedSensor

    classes = {"gpio": GPIOSensor, "gpio-pair": GPIOPairSensor, "serial": SerialSensor,
               "simulated": SimulatedSensor}
    for stype, cls in classes.items():
        params = inspect.signature(cls.__init__).parameters
        for name, spec in config.SENSOR_KEYS[stype].items():
            assert name in params, (stype, name)
            default = params[name].default
            if spec.default is config.REQUIRED:
                assert default is inspect.Parameter.empty, (stype, name)
            else:
                assert default == spec.default or default is spec.default, (stype, name)
    for name, spec in config.SENSOR_KEYS["simulated"].items():
        assert DEFAULTS[name] == spec.default or DEFAULTS[name] is spec.default
    assert DEFAULTS["timezone"] == config.DEFAULT_TIMEZONE


def test_every_key_has_a_doc_and_an_expected_text():
    tables = [config.DEVICE_KEYS, config.STORAGE_KEYS, config.UPLOAD_KEYS, config.REPORT_KEYS,
              *config.SENSOR_KEYS.values()]
    for keys in tables:
        for name, spec in keys.items():
            assert spec.name == name and spec.expected, name
            assert spec.doc, f"{name} has no doc"


@pytest.mark.parametrize("path, why", [
    ("", "every count would be lost"),
    ("   ", "every count would be lost"),
    (":memory:", "must be a file on disk"),
    ("file:counts.db?mode=memory", "must be a file on disk"),
    ("/tmp", "that is a directory"),
    ("/var/lib/kiosk/", "that is a directory"),
])
def test_storage_path_that_would_lose_counts_is_refused(path, why):
    (line,) = problems(GOOD.replace('path = "/tmp/x.db"', f"path = {path!r}".replace("'", '"')))
    assert line.startswith("k.toml: [storage] path: expected a file path")
    assert why in line
