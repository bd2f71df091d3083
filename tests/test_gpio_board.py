"""GPIO sensors on a machine without a Raspberry Pi board (like this one).

gpiozero's default used to try four pin factories: a PinFactoryFallback warning for each,
pigpio's "%%%% Can't connect to pigpio" banner on stdout, the hint "is the service user in
group 'gpio'?" for "unable to locate Pi revision", and lgpio's .lgd-nfy pipe left in the
current directory.  Now: one plain line, nothing else.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from kiosk.clock import SystemClock
from kiosk.exc import SensorError
from kiosk.sensors import gpio
from tests.conftest import ROOT, NotifySocket, gpio_sensor, write_config


@pytest.fixture
def no_board(tmp_path, monkeypatch):
    """No /dev/gpiochip* (pointed at an empty directory), no factory made yet, a fresh cwd."""
    monkeypatch.setattr(gpio, "GPIOCHIP_GLOB", os.fspath(tmp_path / "dev" / "gpiochip*"))
    monkeypatch.setattr(gpio, "_board_factory", None)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_no_board_is_one_clear_line(no_board, capfd):
    sensor = gpio.GPIOSensor("door", pin=17, emit=lambda m: None, clock=SystemClock())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SensorError) as err:
            sensor.start()
    text = str(err.value)
    assert text.startswith("sensor 'door': no GPIO board found (no ")
    assert "is this a Raspberry Pi?" in text and "\n" not in text
    assert "group 'gpio'" not in text, "no board is not a permission problem"
    assert not [w for w in caught if "Fallback" in type(w.message).__name__], caught
    out, errout = capfd.readouterr()
    assert out == "" and errout == "", (out, errout)  # no pigpio banner, no warnings
    assert os.listdir(no_board) == [], "nothing (no .lgd-nfy pipe) may be left in the cwd"
    sensor.close()


def test_another_factory_named_in_the_environment_is_left_to_gpiozero(no_board, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    assert gpio.board_pin_factory("door") is None  # gpiozero loads only that one


@pytest.mark.skipif(bool(glob.glob("/dev/gpiochip*")), reason="this machine has a GPIO chip")
def test_daemon_off_a_pi_runs_and_says_so(tmp_path, daemon):
    """A real ``kiosk run`` with a GPIO sensor here: it keeps running, its status names the
    reason in one line, stdout/stderr carry no banner or fallback warnings, and its cwd gets
    no .lgd-nfy pipe."""
    config = write_config(tmp_path, gpio_sensor("main-entrance", 17))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GPIOZERO_PIN_FACTORY", "LG_WD")}
    notify = tmp_path / "n.sock"
    sock = NotifySocket(notify)
    env["NOTIFY_SOCKET"] = os.fspath(notify)
    proc = subprocess.Popen([sys.executable, "-m", "kiosk", "run", "--config", os.fspath(config)],
                            cwd=cwd, env={**env, "PYTHONPATH": os.fspath(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sock.wait_for("READY=1")
        ready = next(m for m in sock.poll() if m.startswith("READY=1"))
        assert "counting on 0 of 1 sensor; main-entrance down: " in ready
        assert "no GPIO board found" in ready
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert proc.returncode == 0, err
    assert out == "", out
    assert "%%%%" not in err and "PinFactoryFallback" not in err and "pigpio" not in err, err
    assert sum("no GPIO board found" in line for line in err.splitlines()) == 1, err
    assert [p.name for p in Path(cwd).iterdir()] == []
