"""Shared fixtures: real config files, real databases, the daemon as a real process."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DEVICE_SECTION = """\
[device]
id = "test-kiosk-01"
site = "test-site"
timezone = "Europe/Helsinki"
clock = "system"
"""


def storage_section(db: Path | str, flush: float | None = None) -> str:
    """A ``[storage]`` table for ``db``; ``flush=None`` leaves ``flush_interval_s`` at its default."""
    text = f'\n[storage]\npath = "{db}"\n'
    if flush is not None:
        text += f"flush_interval_s = {flush}\n"
    return text


def config_text(db: Path | str, sensors: str = "", *, flush: float | None = None, extra: str = "",
                device: str = DEVICE_SECTION) -> str:
    """A whole valid config: ``device`` + ``[storage]`` for ``db`` + ``sensors`` + ``extra``."""
    return device + storage_section(db, flush) + sensors + extra


BASE_CONFIG = DEVICE_SECTION + """
[storage]
path = "{db}"
flush_interval_s = {flush}
"""


SERIAL_SENSOR = """
[[sensors]]
id = "door"
type = "serial"
port = "{port}"
reconnect_min_s = 0.2
reconnect_max_s = 1
"""


def gpio_sensor(sensor_id: str = "door", pin: int = 17) -> str:
    return f'\n[[sensors]]\nid = "{sensor_id}"\ntype = "gpio"\npin = {pin}\n'


def gpio_pair_sensor(sensor_id: str, pin_a: int, pin_b: int) -> str:
    return f'\n[[sensors]]\nid = "{sensor_id}"\ntype = "gpio-pair"\npin_a = {pin_a}\npin_b = {pin_b}\n'


def simulated_sensor(sensor_id: str, **options: object) -> str:
    """A simulated sensor; ``options`` become extra keys (strings quoted, numbers as-is)."""
    text = f'\n[[sensors]]\nid = "{sensor_id}"\ntype = "simulated"\n'
    for key, value in options.items():
        text += f'{key} = "{value}"\n' if isinstance(value, str) else f"{key} = {value}\n"
    return text


def upload_section(url: str, token_file: Path | str, **options: object) -> str:
    """An ``[upload]`` table; ``options`` (e.g. ``grace_s=0``) become extra keys."""
    text = f'\n[upload]\nurl = "{url}"\ntoken_file = "{token_file}"\n'
    for key, value in options.items():
        text += f"{key} = {value}\n"
    return text


@pytest.fixture
def factory():
    """A gpiozero MockFactory for GPIO sensors (pins reset afterwards)."""
    from gpiozero.pins.mock import MockFactory

    f = MockFactory()
    yield f
    f.reset()


def fill_sample_db(path: Path, t0: float) -> Path:
    """A database where sensor a counted 10 in (t0 … t0 + 9 min) and b 4 out at t0 + 3700 s,
    with the daemon running from t0 to t0 + 3 h."""
    from kiosk.clock import ManualClock
    from kiosk.events import Pulse
    from kiosk.store import Store
    from kiosk.writer import Writer

    store = Store.open(path)
    w = Writer(store, clock=ManualClock(t0), sensor_kinds={"a": "gpio", "b": "serial"})
    w.run_id = store.start_run(now=t0, pid=1, version="t")
    for i in range(10):
        w.handle(Pulse("a", t0 + i * 60, "in"))
    w.handle(Pulse("b", t0 + 3700, "out", 4))
    w.flush()
    store.end_run(w.run_id, now=t0 + 3 * 3600, reason="SIGTERM")
    store.close()
    return path


def write_config(tmp_path: Path, sensors: str, *, flush: float = 1.0, extra: str = "",
                 name: str = "kiosk.toml") -> Path:
    """A config file with the given [[sensors]] TOML and a database in tmp_path."""
    path = tmp_path / name
    path.write_text(BASE_CONFIG.format(db=tmp_path / "counts.db", flush=flush) + sensors + extra)
    return path


@pytest.fixture
def config_file(tmp_path: Path):
    def make(sensors: str, **kw) -> Path:
        return write_config(tmp_path, sensors, **kw)
    return make


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        wait_for(lambda: any(text in m for m in self.poll()), timeout, what=f"sd_notify {text}")

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """``python -m kiosk run`` as a real subprocess with a real notify socket."""

    def __init__(self, config: Path, tmp_path: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.notify = NotifySocket(tmp_path / f"notify-{time.monotonic_ns()}.sock")
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, PYTHONUNBUFFERED="1", **(env or {}))
        env.pop("KIOSK_CONFIG", None)
        self.log_path = tmp_path / "daemon.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "run", "--config", str(config), *args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        try:
            self.notify.wait_for("READY=1", timeout)
        except AssertionError:
            raise AssertionError(f"daemon not ready; log:\n{self.output()}") from None

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()
        self.log.close()


@pytest.fixture
def daemon(tmp_path: Path):
    started: list[DaemonProcess] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(config, tmp_path, *args, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


class PtyFeeder:
    """A pseudo-terminal behind a stable symlink, fed with counter lines from a thread.

    ``rate`` is lines per second; ``written`` counts lines fully written to the pty.
    """

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1
        self.written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.replug()

    def replug(self) -> None:
        """A new pty behind the same path (like a USB counter plugged in again)."""
        self.unplug()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def write(self, data: bytes) -> None:
        """All of ``data`` (a pty whose reader lags takes part of a write and blocks)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def start(self, rate: float, line: bytes = b"IN\n") -> None:
        self._stop.clear()
        per_tick = max(1, int(rate / 50))

        def feed() -> None:
            next_t = time.monotonic()
            while not self._stop.is_set():
                self.write(line * per_tick)
                self.written += per_tick
                next_t += per_tick / rate
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

        self._thread = threading.Thread(target=feed, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        return self.written

    def close(self) -> None:
        self.stop()
        self.unplug()


@pytest.fixture
def pty_feeder(tmp_path: Path):
    feeder = PtyFeeder(tmp_path / "ttyKIOSK")
    yield feeder
    feeder.close()


def db_totals(db: Path) -> tuple[int, int]:
    """(in, out) summed over every bucket, read through a fresh connection."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT coalesce(sum(in_count),0), coalesce(sum(out_count),0)"
                           " FROM counts").fetchone()
        return int(row[0]), int(row[1])
    finally:
        conn.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
