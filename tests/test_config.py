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
    assert "(id 'c') type: expected one of gpio, gpio-pair, serial, simulated, found 'laser'" in joined


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
