"""The CLI: help everywhere, documented in the README, clean errors, export."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kiosk.cli import cli
from tests.conftest import ROOT, fill_sample_db

COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    command = cli.commands[name]
    assert command.help, f"kiosk {name} has no help"
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0 and "Usage: " in r.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name):
    readme = (ROOT / "README.md").read_text()
    assert f"kiosk {name}" in readme, f"`kiosk {name}` is not documented in README.md"


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "kiosk", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("kiosk, version ")


def test_errors_are_one_line_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kiosk", "status", "--db", str(tmp_path / "x.db")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("kiosk: error: ") and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "kiosk", "--debug", "status", "--db",
                          str(tmp_path / "x.db")], capture_output=True, text=True, timeout=60)
    assert "Traceback" in out.stderr


T0 = 1_795_417_200.0  # 2026-11-23T07:00:00Z, Monday 09:00 in Helsinki


@pytest.fixture
def filled_db(tmp_path) -> Path:
    return fill_sample_db(tmp_path / "counts.db", T0)


def test_export_csv(filled_db):
    r = CliRunner().invoke(cli, ["export", "--db", str(filled_db), "--since",
                                 "2026-11-23T07:00:00Z", "--until", "2026-11-23T10:00:00Z"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.output)))
    assert rows[0] == ["sensor_id", "start", "end", "in", "out", "coverage", "imported"]
    assert all(r[5] == "1.0" and r[6] == "no" for r in rows[1:])  # counted throughout
    assert [r[:5] for r in rows[1:]] == [
        ["a", "2026-11-23T07:00:00Z", "2026-11-23T08:00:00Z", "10", "0"],
        ["a", "2026-11-23T08:00:00Z", "2026-11-23T09:00:00Z", "0", "0"],
        ["a", "2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z", "0", "0"],
        ["b", "2026-11-23T07:00:00Z", "2026-11-23T08:00:00Z", "0", "0"],
        ["b", "2026-11-23T08:00:00Z", "2026-11-23T09:00:00Z", "0", "4"],
        ["b", "2026-11-23T09:00:00Z", "2026-11-23T10:00:00Z", "0", "0"],
    ]


def test_export_leaves_out_periods_when_off(filled_db):
    r = CliRunner().invoke(cli, ["export", "--db", str(filled_db), "--since", "2026-11-23",
                                 "--until", "2026-11-24", "--format", "json", "--sensor", "a"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [d["start"] for d in data] == ["2026-11-23T07:00:00Z", "2026-11-23T08:00:00Z",
                                          "2026-11-23T09:00:00Z"]
    assert sum(d["in"] for d in data) == 10


def test_export_15m_and_1d(filled_db, tmp_path):
    r = CliRunner().invoke(cli, ["export", "--db", str(filled_db), "--period", "1d", "--since",
                                 "2026-11-23", "--until", "2026-11-24", "-o",
                                 str(tmp_path / "out.csv")])
    assert r.exit_code == 0
    rows = list(csv.reader((tmp_path / "out.csv").read_text().splitlines()))
    assert rows[1][:5] == ["a", "2026-11-22T22:00:00Z", "2026-11-23T22:00:00Z", "10", "0"]
    assert float(rows[1][5]) < 1  # the counter ran for 3 hours of that day
    r = CliRunner().invoke(cli, ["export", "--db", str(filled_db), "--period", "15m", "--since",
                                 "2026-11-23T09:00", "--until", "2026-11-23T09:30"])
    assert [",".join(line.split(",")[:5]) for line in r.output.splitlines()[1:]] == [
        "a,2026-11-23T07:00:00Z,2026-11-23T07:15:00Z,10,0",
        "a,2026-11-23T07:15:00Z,2026-11-23T07:30:00Z,0,0",
        "b,2026-11-23T07:00:00Z,2026-11-23T07:15:00Z,0,0",
        "b,2026-11-23T07:15:00Z,2026-11-23T07:30:00Z,0,0",
    ]


def test_export_bad_times(filled_db):
    r = CliRunner().invoke(cli, ["export", "--db", str(filled_db), "--since", "soon"])
    assert r.exit_code == 2 and "cannot read the time 'soon'" in r.output  # a usage error
    r = CliRunner().invoke(cli, ["export", "--db", str(filled_db), "--since", "2026-11-24",
                                 "--until", "2026-11-23"])
    assert r.exit_code == 2 and "must be after" in r.output


def test_status_of_stopped_daemon(filled_db):
    r = CliRunner().invoke(cli, ["status", "--db", str(filled_db)])
    assert r.exit_code == 3, r.output  # StatusCode.STOPPED, for monitoring
    assert "daemon:   STOPPED" in r.output and "stopped by SIGTERM" in r.output
    r = CliRunner().invoke(cli, ["status", "--db", str(filled_db), "--json"])
    info = json.loads(r.output)
    assert info["daemon"]["state"] == "stopped"
    assert {s["sensor_id"] for s in info["sensors"]} == {"a", "b"}


def test_fatal_errors_reach_the_journal_at_priority_err(tmp_path):
    """Under systemd (JOURNAL_STREAM set) each error line carries the syslog prefix <3>."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "a"\nsite = "b"\n[storage]\nflush_interval_s = "fast"\n')
    env = {**os.environ, "JOURNAL_STREAM": "8:12345"}
    r = subprocess.run([sys.executable, "-m", "kiosk", "run", "--config", str(bad)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("<3>kiosk: ") for line in lines), r.stderr
    env.pop("JOURNAL_STREAM")
    r = subprocess.run([sys.executable, "-m", "kiosk", "run", "--config", str(bad)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.stderr.startswith("kiosk: error: ")


BAD_TOML = """\
[device]
id = "espoo-isoomena-01"
site = "iso-omena-service-centre"

[storage]
path = "/var/lib/kiosk/counts.db"
flush_intervall_s = 2

[[sensors]]
id = "a"
type = "gpio"
pin = 17

[[sensors]]
id = "a"
type = "gpio"
pin = "GPIO17"
"""


def test_the_readme_config_error_example_is_what_the_program_prints(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD_TOML)
    out = subprocess.run([sys.executable, "-m", "kiosk", "check-config", "bad.toml"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2
    readme = (ROOT / "README.md").read_text()
    assert f"$ kiosk check-config bad.toml\n{out.stderr}```" in readme, out.stderr


@pytest.mark.parametrize("args", [["--bogus"], ["nosuch"], ["report", "dya"],
                                  ["export", "--period", "2h"], ["status", "--json", "extra"]])
def test_usage_errors_are_one_kiosk_error_line_with_exit_2(args):
    out = subprocess.run([sys.executable, "-m", "kiosk", *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("kiosk: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Usage:" not in out.stderr and out.stdout == ""
    r = CliRunner().invoke(cli, args)  # the same through click's own test runner
    assert r.exit_code == 2 and r.stderr.startswith("kiosk: error: ")


def test_a_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "kiosk", "receiver", "--port", str(port),
                              "--db", str(tmp_path / "r.db")], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("kiosk: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "in use" in out.stderr


def test_every_since_reads_the_same_forms(filled_db):
    for command in (["export"], ["log"], ["annotate", "--list"]):
        for since in ("7d", "24h", "today", "yesterday", "2026-11-22", "2026-11-22T09:00",
                      "2026-11-22T07:00:00Z", "2w", "30m"):
            r = CliRunner().invoke(cli, [*command, "--db", str(filled_db), "--since", since])
            assert r.exit_code == 0, (command, since, r.output)


def test_every_command_uses_the_demo_clock_for_a_demo_database(tmp_path):
    """After an accelerated demo that ran into tomorrow, status, report, export and log all
    take the demo's clock (its last write) as the present, not today's real date."""
    import time as _time
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from kiosk.store import Store

    tz = ZoneInfo("Europe/Helsinki")
    real = _time.time()
    last = real + 86400 + 3600  # the demo's clock ended a day and an hour ahead
    tomorrow = (datetime.fromtimestamp(last, tz)).date()
    db = tmp_path / "counts.db"
    with Store.open(db) as store:
        run = store.start_run(now=last - 7200, pid=1, version="t")
        store.write_batch(now=last, counts={("door", int((last - 1800) // 900 * 900)): [3, 1]},
                          run_id=run)
        store.end_run(run, now=last, reason="SIGTERM")
        store.set_meta(daemon={"pid": 1, "speed": 1800, "version": "t"})
    status = json.loads(CliRunner().invoke(cli, ["status", "--db", str(db), "--json"]).stdout)
    assert status["today"]["date"] == tomorrow.isoformat() and status["today"]["in"] == 3
    assert status["daemon"]["last_write_age_s"] == 0
    report = json.loads(CliRunner().invoke(cli, ["report", "day", "--db", str(db), "--format",
                                                 "json"]).stdout)
    assert report["first_day"] == tomorrow.isoformat() and report["totals"]["visits"] == 3
    exported = json.loads(CliRunner().invoke(cli, ["export", "--db", str(db), "--period", "1d",
                                                   "--format", "json"]).stdout)
    assert [r["in"] for r in exported] == [3]
    midnight = datetime.combine(tomorrow, datetime.min.time(), tz)
    assert exported[0]["start"] == midnight.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
    log = CliRunner().invoke(cli, ["log", "--db", str(db), "--since", "today", "--kind", "nothing"])
    assert f"since {tomorrow.isoformat()} 00:00:00" in log.stdout, log.stdout
    assert (tomorrow - timedelta(days=1)).isoformat() not in log.stdout
