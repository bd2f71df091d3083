"""A serial counter and the real daemon process: real ptys, real signals, the real database.

Cumulative counters (running totals): the issue's table rows, restarts, an unplugged cable,
a reload and kill -9 between readings, all end to end.  Stops and reloads: lines waiting in
the port are counted whatever the signal and whenever it comes.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import SERIAL_SENSOR, db_totals, integrity, wait_for

CUMULATIVE = SERIAL_SENSOR + 'mode = "cumulative"\n'


def _stored_totals(db: Path) -> dict[str, tuple[int | None, int | None]]:
    """sensor id -> (in_last, out_last) as the daemon stored them (nothing if no table yet)."""
    conn = sqlite3.connect(db)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            "SELECT sensor_id, in_last, out_last FROM serial_totals")}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def _journal(db: Path, kind: str | None = None) -> list[tuple[str, str, str]]:
    """(level, kind, message) of the journal, oldest first."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT level, kind, message FROM journal ORDER BY id").fetchall()
    finally:
        conn.close()
    return [r for r in rows if kind is None or r[1] == kind]


def _send_totals(feeder, db: Path, readings: list[tuple[int, int]], *,
                 settle: tuple[int, int] | None = None) -> None:
    """Send ``TOTAL IN=… OUT=…`` lines; wait until the stored totals show ``settle`` (default:
    the last reading), i.e. the daemon judged and stored them all."""
    for i, o in readings:
        feeder.write(f"TOTAL IN={i} OUT={o}\n".encode())
    want = settle or readings[-1]
    wait_for(lambda: _stored_totals(db).get("door") == want, what=f"stored totals {want}")


# -- the issue's table, end to end --------------------------------------------------------------

ROWS = {
    # readings sent (IN, OUT)                                    the device counted (in, out)
    "in-wraps-after-65535": ([(65530, 30000), (65534, 30005), (3, 30010)], (9, 10)),
    "dropped-digit": ([(12345, 12000), (1235, 12001), (12347, 12002)], (2, 2)),
    "extra-digit": ([(12345, 500), (123455, 500), (12347, 500)], (2, 0)),
    "garbled": ([(40000, 1000), (8000, 1001), (40001, 1002)], (1, 2)),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_issue_table_rows(row, config_file, daemon, pty_feeder, tmp_path):
    readings, counted = ROWS[row]
    db = tmp_path / "counts.db"
    d = daemon(config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.2))
    d.wait_ready()
    _send_totals(pty_feeder, db, readings)
    assert d.terminate() == 0, d.output()
    assert db_totals(db) == counted
    if row != "in-wraps-after-65535":  # a garbled reading: rejected and journalled
        (garbled,) = _journal(db, "garbled-total")
        assert garbled[0] == "WARNING" and "rejected" in garbled[2]
    else:
        (wrap,) = _journal(db, "counter-wrap")
        assert "IN total wrapped from 65534 to 3: counted 5" in wrap[2]


def test_confirmed_jump_invents_nothing_and_is_journalled(config_file, daemon, pty_feeder,
                                                         tmp_path):
    db = tmp_path / "counts.db"
    d = daemon(config_file(CUMULATIVE.format(port=pty_feeder.link) + "max_jump = 500\n",
                           flush=0.2))
    d.wait_ready()
    _send_totals(pty_feeder, db, [(100, 10), (5100, 11), (5102, 12)])
    assert d.terminate() == 0
    assert db_totals(db) == (2, 2)
    (jump,) = _journal(db, "implausible-total")
    assert jump[0] == "WARNING"
    assert "5000 not counted" in jump[2] and "check the device" in jump[2]


def test_device_reset_counts_from_zero(config_file, daemon, pty_feeder, tmp_path):
    db = tmp_path / "counts.db"
    d = daemon(config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.2))
    d.wait_ready()
    _send_totals(pty_feeder, db, [(5000, 4000), (5010, 4004), (3, 2), (7, 2)])
    assert d.terminate() == 0
    assert db_totals(db) == (10 + 7, 4 + 2)
    assert [j[0] for j in _journal(db, "device-reset")] == ["WARNING", "WARNING"]


# -- restarts, the cable, reloads, kill -9 ------------------------------------------------------


@pytest.mark.parametrize("stop", ["SIGTERM", "kill -9"])
def test_restart_counts_what_came_while_stopped(stop, config_file, daemon, pty_feeder,
                                                tmp_path):
    """100 -> 110, restart, 160 -> 170: the device counted 70, and 70 are stored."""
    db = tmp_path / "counts.db"
    cfg = config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.2)
    d = daemon(cfg)
    d.wait_ready()
    _send_totals(pty_feeder, db, [(100, 40), (110, 42)])
    if stop == "SIGTERM":
        assert d.terminate() == 0
    else:  # between two readings, after the flush that stored 110
        d.kill9()
    d = daemon(cfg)
    d.wait_ready()
    _send_totals(pty_feeder, db, [(160, 45), (170, 47)])
    assert d.terminate() == 0
    assert db_totals(db) == (70, 7)
    offline = [j for j in _journal(db, "counted-offline")]
    assert [j[0] for j in offline] == ["INFO", "INFO"]
    assert "IN total went from 110 to 160: 50 counted while offline" in offline[0][2]
    assert "OUT total went from 42 to 45: 3 counted while offline" in offline[1][2]


def test_unplugged_cable_counts_what_came_meanwhile(config_file, daemon, pty_feeder, tmp_path):
    db = tmp_path / "counts.db"
    d = daemon(config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.2))
    d.wait_ready()
    _send_totals(pty_feeder, db, [(100, 40), (110, 42)])
    pty_feeder.unplug()
    pty_feeder.link.unlink()
    wait_for(lambda: "reopening in" in d.output(), what="sensor down")
    pty_feeder.replug()
    wait_for(lambda: f"reconnected to {pty_feeder.link}" in d.output(), what="reconnected")
    # 3000 while the cable was out (more than max_jump): confirmed by the reading after it
    _send_totals(pty_feeder, db, [(3110, 50), (3120, 51)])
    assert d.terminate() == 0
    assert db_totals(db) == (3020, 11)
    messages = [j[2] for j in _journal(db, "counted-offline")]
    assert any("(3000 counted while offline)" in m for m in messages), messages


def test_reset_while_stopped_is_flagged(config_file, daemon, pty_feeder, tmp_path):
    db = tmp_path / "counts.db"
    cfg = config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.2)
    d = daemon(cfg)
    d.wait_ready()
    _send_totals(pty_feeder, db, [(40000, 100), (40010, 101)])
    assert d.terminate() == 0
    d = daemon(cfg)
    d.wait_ready()
    _send_totals(pty_feeder, db, [(25, 103), (30, 104)])
    assert d.terminate() == 0
    # the least the device counted: 30 since its reset (what it counted before is unknown)
    assert db_totals(db) == (10 + 30, 1 + 3)
    (flag,) = _journal(db, "reset-while-offline")
    assert flag[0] == "WARNING" and "cannot tell apart" in flag[2]


def test_reload_rebuilding_the_sensor_resumes_from_the_latest_totals(
        config_file, daemon, pty_feeder, tmp_path):
    db = tmp_path / "counts.db"
    cfg = config_file(CUMULATIVE.format(port=pty_feeder.link), flush=30)  # nothing flushed yet
    d = daemon(cfg)
    d.wait_ready()
    for i, o in [(100, 40), (110, 42)]:
        pty_feeder.write(f"TOTAL IN={i} OUT={o}\n".encode())
    time.sleep(0.5)
    cfg.write_text(cfg.read_text().replace("reconnect_max_s = 1", "reconnect_max_s = 2"))
    d.proc.send_signal(signal.SIGHUP)  # the sensor's options changed: it is rebuilt
    wait_for(lambda: "restarted door" in d.output(), what="reload")
    assert _stored_totals(db)["door"] == (110, 42)  # the reload's flush stored them
    pty_feeder.write(b"TOTAL IN=115 OUT=43\nTOTAL IN=120 OUT=44\n")
    assert d.terminate() == 0  # the stop drains the port and writes the last counts
    assert _stored_totals(db)["door"] == (120, 44)
    assert db_totals(db) == (20, 4)
    # the port was closed for a moment: the first reading after it is judged as after a gap
    assert [j[2] for j in _journal(db, "counted-offline")] == [
        "IN total went from 110 to 115: 5 counted while offline",
        "OUT total went from 42 to 43: 1 counted while offline"]


def test_kill9_at_random_moments_neither_loses_nor_invents(config_file, daemon, pty_feeder,
                                                           tmp_path):
    """A device sending its totals 50 times a second; kill -9 at random moments, restart.
    The counts and the totals are stored in one transaction, so whatever the moment, the
    database ends with exactly what the device counted."""
    db = tmp_path / "counts.db"
    cfg = config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.3)
    rnd = random.Random(8)
    device = [1000, 500]
    counted = [0, 0]

    def send(n: int) -> None:
        for _ in range(n):
            for ch in (0, 1):
                step = rnd.randrange(0, 4)
                device[ch] += step
                counted[ch] += step
            pty_feeder.write(f"TOTAL IN={device[0]} OUT={device[1]}\n".encode())
            time.sleep(0.02)

    d = daemon(cfg)
    d.wait_ready()
    _send_totals(pty_feeder, db, [tuple(device)])  # the baseline
    for _ in range(4):
        send(rnd.randrange(10, 60))
        d.kill9()
        assert integrity(db) == "ok"
        stored = db_totals(db)
        assert stored[0] <= counted[0] and stored[1] <= counted[1]
        send(rnd.randrange(0, 20))  # the device counts on while the daemon is down
        d = daemon(cfg)
        d.wait_ready()
    send(20)
    _send_totals(pty_feeder, db, [tuple(device)] * 2)
    assert d.terminate() == 0
    assert db_totals(db) == tuple(counted)


# -- stops and reloads lose no byte (events mode) -----------------------------------------------


@pytest.mark.parametrize("order", ["term-then-cont", "cont-then-term"])
def test_lines_sent_while_frozen_are_stored_at_sigterm(order, config_file, daemon, pty_feeder,
                                                        tmp_path):
    db = tmp_path / "counts.db"
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=30)
    rounds = 3
    for n in range(rounds):
        d = daemon(cfg)
        d.wait_ready()
        before = db_totals(db)[0]
        d.proc.send_signal(signal.SIGSTOP)
        pty_feeder.write(b"IN\n" * 300)
        if order == "term-then-cont":
            d.proc.send_signal(signal.SIGTERM)
            d.proc.send_signal(signal.SIGCONT)
        else:
            d.proc.send_signal(signal.SIGCONT)
            d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0, d.output()
        assert db_totals(db)[0] - before == 300, f"round {n + 1} of {rounds}"


@pytest.mark.slow
def test_sigterm_at_random_moments_under_load_loses_nothing(config_file, daemon, pty_feeder,
                                                            tmp_path):
    """2,000 lines a second without pause; SIGTERM at random moments, restart.  What the
    daemon had not read when it stopped waits in the port for the next start."""
    db = tmp_path / "counts.db"
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=2.0)
    rnd = random.Random(5)
    pty_feeder.start(rate=2000)
    for _ in range(8):
        d = daemon(cfg)
        d.wait_ready()
        time.sleep(rnd.uniform(0.1, 1.5))
        assert d.terminate() == 0, d.output()
    d = daemon(cfg)
    d.wait_ready()
    written = pty_feeder.stop()
    wait_for(lambda: db_totals(db)[0] >= written, timeout=60, what=f"{written} stored")
    assert d.terminate() == 0
    assert db_totals(db)[0] == written
    print(f"SIGTERM x8 under 2000 lines/s: {db_totals(db)[0]} of {written} stored")


@pytest.mark.parametrize("rebuild", [False, True], ids=["unchanged", "rebuilt"])
def test_sighup_storm_loses_nothing(rebuild, config_file, daemon, pty_feeder, tmp_path):
    """About 20 SIGHUPs a second for 4 s while 600 lines a second arrive.  Unchanged options
    keep the sensor running; changed ones rebuild it, which drains and reopens the port."""
    db = tmp_path / "counts.db"
    cfg = config_file(SERIAL_SENSOR.format(port=pty_feeder.link), flush=0.5)
    text = cfg.read_text()
    d = daemon(cfg)
    d.wait_ready()
    pty_feeder.start(rate=600)
    sent = 0
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        if rebuild:
            cfg.write_text(text.replace("reconnect_max_s = 1", f"reconnect_max_s = {sent % 2 + 1}"))
        d.proc.send_signal(signal.SIGHUP)
        sent += 1
        time.sleep(0.05)
    written = pty_feeder.stop()
    try:
        wait_for(lambda: db_totals(db)[0] >= written, timeout=60, what=f"{written} stored")
    except AssertionError:
        raise AssertionError(f"{db_totals(db)} of {written} stored; daemon log:\n"
                             + d.output()[-3000:]) from None
    assert d.terminate() == 0, d.output()
    assert db_totals(db)[0] == written
    reloads = [j[2] for j in _journal(db, "config-reload")]
    assert len(reloads) >= sent // 4, f"{len(reloads)} reloads for {sent} SIGHUPs"
    assert any(("restarted door" in m) == rebuild for m in reloads)
    print(f"{sent} SIGHUPs ({len(reloads)} reloads): {written} of {written} stored")


def test_totals_are_forgotten_when_the_sensor_counts_events(config_file, daemon, pty_feeder,
                                                            tmp_path):
    """Switched to events mode, the device's increase is counted as events; switched back,
    resuming from the old totals would count it twice: a new baseline instead."""
    db = tmp_path / "counts.db"
    cumulative = config_file(CUMULATIVE.format(port=pty_feeder.link), flush=0.2)
    text = cumulative.read_text()
    d = daemon(cumulative)
    d.wait_ready()
    _send_totals(pty_feeder, db, [(100, 40), (110, 42)])
    assert d.terminate() == 0
    cumulative.write_text(text.replace('mode = "cumulative"\n', ""))
    d = daemon(cumulative)
    d.wait_ready()
    pty_feeder.write(b"IN 50\n")
    wait_for(lambda: db_totals(db) == (60, 2), what="the event counted")
    assert _stored_totals(db) == {}
    assert d.terminate() == 0
    cumulative.write_text(text)
    d = daemon(cumulative)
    d.wait_ready()
    _send_totals(pty_feeder, db, [(160, 45), (170, 47)])
    assert d.terminate() == 0
    assert db_totals(db) == (70, 4)  # 10 + 50 + 10; not 50 more for 110 -> 160
